"""A preparation (tokenisation, chunking) runs in steps of at most 256 documents and 64 KiB of their text, checking its
budget between steps, so work abandoned by the server (deadline passed, client gone) stops soon whatever the
documents' lengths. Before, a step was 256 documents whatever their size: with 3-4 KB documents and 8 chunks each that
was ~0.5 s of tokenisation still running after the answer, competing with the answers still due."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerankd import Reranker
from rerankd.jobs import Budget, ScoreOptions
from rerankd.jobs.prepare import SLICE, SLICE_CHARS, slices
from rerankd.validation import check_texts, ranking_pairs

QUERY = "what is the giant panda?"
LONG = [" ".join(f"w{i}x{j}" for j in range(400)) for i in range(100)]  # ~3 KB each, 305 KB in all
STEPS = sum(map(len, LONG)) // (64 * 1024) + 1  # 5: at least one budget check per 64 KiB of text


class Abandon(Exception):
    pass


class CountingCheckpoint:
    """A budget checkpoint that counts its calls and, from call ``stop_at`` on, abandons the work."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls = 0
        self.stop_at = stop_at

    def __call__(self) -> None:
        self.calls += 1
        if self.stop_at is not None and self.calls >= self.stop_at:
            raise Abandon


def test_steps_are_bounded_by_documents_and_by_text() -> None:
    short = ["a short document"] * 600
    assert [len(step) for step in slices(short)] == [SLICE, SLICE, 600 - 2 * SLICE]
    mixed = ["x" * 40_000, "y" * 30_000, "z" * 100_000, "w" * 10, "v" * 20]
    assert list(slices(mixed)) == [range(0, 1), range(1, 2), range(2, 3), range(3, 5)]  # a huge one on its own
    steps = list(slices(LONG))
    assert [i for step in steps for i in step] == list(range(len(LONG)))
    assert all(sum(len(LONG[i]) for i in step) <= SLICE_CHARS for step in steps)
    assert list(slices([])) == []


@pytest.fixture(scope="module")
def bert(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def minilm(minilm_path: Path) -> Reranker:
    return Reranker.from_pretrained(str(minilm_path), device="cpu", dtype="float32")


@pytest.mark.parametrize("chunks", [None, 8], ids=["truncated", "chunked"])
def test_pair_preparation_checks_its_budget_every_64_kib(bert: Reranker, chunks: int | None) -> None:
    checkpoint = CountingCheckpoint()
    job = bert.prepare_pairs(ranking_pairs(QUERY, LONG), ScoreOptions(max_chunks_per_doc=chunks), Budget(checkpoint))
    assert len(job.items) == len(LONG) if chunks is None else len(job.items) > len(LONG)  # 4 windows each
    assert checkpoint.calls >= STEPS  # where 256-document steps gave 2
    abandoned = CountingCheckpoint(stop_at=2)
    with pytest.raises(Abandon):
        bert.prepare_pairs(ranking_pairs(QUERY, LONG), ScoreOptions(max_chunks_per_doc=chunks), Budget(abandoned))


def test_embedding_and_cosine_preparations_check_their_budget_every_64_kib(minilm: Reranker) -> None:
    for prepare in (
        lambda budget: minilm.prepare_embed(check_texts(LONG, param="texts"), "document", budget),
        lambda budget: minilm.prepare_pairs(ranking_pairs(QUERY, LONG), ScoreOptions(), budget),
    ):
        checkpoint = CountingCheckpoint()
        prepare(Budget(checkpoint))
        assert checkpoint.calls >= STEPS
