"""Built-in inputs: the sanity pairs of ``rerankd smoke`` and the default set of ``rerankd compare``."""

from __future__ import annotations

from dataclasses import dataclass

from rerankd.evaluation.datasets import QueryDocumentPair


@dataclass(frozen=True)
class SmokeCase:
    """A query with one passage that answers it and one that does not."""

    query: str
    relevant: str
    irrelevant: str


SMOKE_CASES: tuple[SmokeCase, ...] = (
    SmokeCase(
        query="what is panda?",
        relevant=(
            "The giant panda is a bear species endemic to China. It lives in mountain forests and feeds "
            "almost entirely on bamboo."
        ),
        irrelevant="The stock market closed slightly higher on Friday after a week of volatile trading.",
    ),
    SmokeCase(
        query="what is the capital of France?",
        relevant="Paris is the capital and most populous city of France, situated on the river Seine.",
        irrelevant="Photosynthesis is the process by which green plants turn sunlight, water and carbon dioxide "
        "into sugar and oxygen.",
    ),
    SmokeCase(
        query="Tell me about machine learning",
        relevant=(
            "Machine learning is a field of artificial intelligence in which computers learn patterns from "
            "data and improve at a task without being explicitly programmed."
        ),
        irrelevant="A good sourdough loaf needs flour, water, salt and a lively starter, plus a long, slow rise.",
    ),
)

# Short sentences of a published NPU-vs-CPU precision report, plus the smoke passages.
_EXTRA_DOCUMENTS: tuple[str, ...] = (
    "The capital of France is Paris.",
    "Paris is a beautiful city.",
    "The capital of Germany is Berlin.",
    "Explain the theory of relativity.",
    "Machine learning is a subset of artificial intelligence.",
    "The Earth orbits around the Sun.",
    "Quantization reduces model size and improves inference speed.",
    "The mitochondria is the powerhouse of the cell.",
)
_EXTRA_QUERIES: tuple[str, ...] = ("How does quantization speed up inference?", "Why does the Earth have seasons?")


def default_compare_pairs() -> list[QueryDocumentPair]:
    """Every built-in query against every built-in passage (5 queries x 14 passages)."""
    queries = [case.query for case in SMOKE_CASES] + list(_EXTRA_QUERIES)
    passages = [text for case in SMOKE_CASES for text in (case.relevant, case.irrelevant)] + list(_EXTRA_DOCUMENTS)
    return [QueryDocumentPair(query, passage) for query in queries for passage in passages]
