"""The Reranker facade: typed input errors, ordering, top_n, truncation policy, batch invariance, golden
scores and the async variants."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest

from rerankd import InputTooLong, InvalidInput, Reranker
from tests.tiny_models import corpus

GOLDEN_PAIRS = [
    ("what is the giant panda?", "The giant panda is a bear species of china."),
    ("what is the giant panda?", "hello world"),
    ("capital of france", "Paris is the capital city of france."),
]


@pytest.fixture(scope="module")
def bert(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32", max_length=96)


def test_golden_scores_tiny_models(bert_ce: Path, xlmr_ce: Path) -> None:
    """Pinned raw logits of the seeded fixtures: a silent change in encoding or scoring shows up here."""
    raw_bert = Reranker.from_pretrained(str(bert_ce), device="cpu", normalize=False).score(GOLDEN_PAIRS)
    raw_xlmr = Reranker.from_pretrained(str(xlmr_ce), device="cpu", normalize=False).score(GOLDEN_PAIRS)
    assert raw_bert == pytest.approx([-0.6565, -0.92336, -2.77023], abs=1e-4)
    assert raw_xlmr == pytest.approx([7.05308, 8.2454, 6.19524], abs=1e-4)


@pytest.mark.parametrize(
    ("query", "documents", "match"),
    [
        ("", ["a"], "query must not be empty"),
        ("   ", ["a"], "query must not be empty"),
        (None, ["a"], "query must be a string"),
        ("q", [], "documents must not be empty"),
        ("q", "just a string", "documents must be a list"),
        ("q", ["ok", 3], r"documents\[1\] must be a string"),
        ("q", None, "documents must be a list"),
    ],
)
def test_rank_input_errors(bert: Reranker, query: object, documents: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        bert.rank(query, documents)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pairs", "match"),
    [
        ([], "non-empty list"),
        ([("q",)], r"pairs\[0\] must be a \(query, document\) pair"),
        ([("q", "d"), ("", "d")], r"pairs\[1\]\[0\] must not be empty"),
        ([("q", 5)], r"pairs\[0\]\[1\] must be a string"),
        ("qd", "non-empty list"),
    ],
)
def test_score_input_errors(bert: Reranker, pairs: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        bert.score(pairs)  # type: ignore[arg-type]


@pytest.mark.parametrize("top_n", [0, -1, 1.5, True])
def test_bad_top_n(bert: Reranker, top_n: object) -> None:
    with pytest.raises(InvalidInput, match="top_n"):
        bert.rank("q", ["a"], top_n=top_n)  # type: ignore[arg-type]


def test_rank_orders_by_score_and_cuts_top_n(bert: Reranker) -> None:
    docs = corpus(seed=11, n=9, min_words=3, max_words=30)
    ranked = bert.rank("giant panda china", docs)
    scores = [r.score for r in ranked]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r.index for r in ranked) == list(range(9))
    assert all(docs[r.index] == r.document for r in ranked)
    direct = bert.score([("giant panda china", d) for d in docs])
    assert [direct[r.index] for r in ranked] == scores
    assert bert.rank("giant panda china", docs, top_n=3) == ranked[:3]
    assert bert.rank("giant panda china", docs, top_n=50) == ranked


def test_ties_keep_input_order(bert: Reranker) -> None:
    ranked = bert.rank("q", ["same text", "same text", "same text"])
    assert [r.index for r in ranked] == [0, 1, 2]


def test_inputs_are_not_mutated(bert: Reranker) -> None:
    docs = ["b doc", "a doc"]
    pairs = [("q", "x"), ("q", "y")]
    bert.rank("q", docs)
    bert.score(pairs)
    assert docs == ["b doc", "a doc"] and pairs == [("q", "x"), ("q", "y")]


def test_truncation_off_rejects_with_index_and_token_count(bert_ce: Path) -> None:
    strict = Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=64, truncate=False)
    docs = ["short one", " ".join(["panda"] * 200), "short two"]
    with pytest.raises(InputTooLong) as info:
        strict.rank("q", docs)
    assert info.value.index == 1
    assert info.value.limit == 64
    assert info.value.tokens == 1 + 1 + 1 + 200 + 1  # [CLS] q [SEP] 200 x panda [SEP]
    assert "input 1 has 204 tokens" in info.value.message
    assert len(strict.rank("q", ["short one", "short two"])) == 2


def test_batch_invariance(bert_ce: Path) -> None:
    """A pair's score does not depend on which batch or how much padding it runs with."""
    rng = random.Random(7)
    docs = corpus(seed=12, n=40, min_words=1, max_words=90)
    pairs = [(rng.choice(["panda", "capital of france", "machine learning data"]), d) for d in docs]
    alone = [Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=96).score([pair])[0] for pair in pairs[:5]]
    big = Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=96, batch_tokens=4096)
    one_by_one = Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=96, max_batch_size=1)
    together = np.array(big.score(pairs))
    separately = np.array(one_by_one.score(pairs))
    assert np.abs(together - separately).max() <= 1e-5
    assert np.abs(together[:5] - np.array(alone)).max() <= 1e-5
    shuffled = list(range(len(pairs)))
    rng.shuffle(shuffled)
    reordered = np.array(big.score([pairs[i] for i in shuffled]))
    assert np.abs(reordered - together[shuffled]).max() <= 1e-5


def test_progress_callback_counts_every_pair(bert: Reranker) -> None:
    done: list[int] = []
    bert.rank("q", corpus(seed=13, n=30, min_words=2, max_words=60), progress=done.append)
    assert sum(done) == 30


def test_async_variants_match_sync(bert: Reranker) -> None:
    docs = corpus(seed=14, n=5, min_words=2, max_words=20)

    async def both() -> tuple[list, list]:
        return await asyncio.gather(bert.arank("panda", docs), bert.ascore([("panda", d) for d in docs]))

    ranked, scores = asyncio.run(both())
    assert ranked == bert.rank("panda", docs)
    assert scores == bert.score([("panda", d) for d in docs])


def test_info_describes_the_model(bert: Reranker, bert_ce: Path) -> None:
    assert bert.info.family == "cross-encoder"
    assert bert.info.device == "cpu" and bert.info.dtype == "float32"
    assert bert.info.max_length == 96
    assert bert.info.path == str(bert_ce.resolve())


def test_loading_prints_nothing_and_leaves_transformers_settings_alone(
    bert_ce: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A library never prints: transformers' "Loading weights" bar is off while rerankd loads, then as it was."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    capfd.readouterr()
    reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    reranker.score([("q", "d")])
    printed = capfd.readouterr()
    assert printed.out == "" and "Loading" not in printed.err and "%|" not in printed.err
    assert hf_logging.is_progress_bar_enabled()  # the caller's setting is restored
