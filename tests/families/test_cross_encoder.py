"""Encoder cross-encoders vs their references on the same tiny random weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rerankd import Reranker
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
LONG_QUERY = " ".join(["where is the capital city of france and what river"] * 12)


def _pairs() -> list[tuple[str, str]]:
    docs = corpus(seed=3, n=12, min_words=3, max_words=40) + corpus(seed=4, n=4, min_words=90, max_words=160)
    return [(QUERY, d) for d in docs] + [(LONG_QUERY, d) for d in docs[:6]]


def _flag(path: Path, max_length: int) -> list[float]:
    from FlagEmbedding import FlagReranker

    ref = FlagReranker(str(path), use_fp16=False, devices=["cpu"], max_length=max_length, batch_size=8)
    return ref.compute_score(_pairs(), normalize=False)


@pytest.mark.oracle
@pytest.mark.parametrize("kind", ["bert", "xlmr"])
@pytest.mark.parametrize("max_length", [128, 48])
def test_matches_flag_reranker(kind: str, max_length: int, bert_ce: Path, xlmr_ce: Path) -> None:
    path = bert_ce if kind == "bert" else xlmr_ce
    ours = Reranker.from_pretrained(str(path), device="cpu", dtype="float32", max_length=max_length, normalize=False)
    got = np.array(ours.score(_pairs()))
    want = np.array(_flag(path, max_length))
    assert np.abs(got - want).max() <= 1e-5
    assert np.argsort(-got).tolist() == np.argsort(-want).tolist()
    assert got.std() > 0.1  # the fixture spreads logits: a constant output would not pass


@pytest.mark.oracle
@pytest.mark.parametrize("kind", ["bert", "xlmr"])
@pytest.mark.parametrize("max_length", [128, 48])
def test_longest_first_variant_matches_sentence_transformers(
    kind: str, max_length: int, bert_ce: Path, xlmr_ce: Path
) -> None:
    from sentence_transformers import CrossEncoder

    path = bert_ce if kind == "bert" else xlmr_ce
    ours = Reranker.from_pretrained(
        str(path), device="cpu", dtype="float32", max_length=max_length, truncation="longest_first"
    )
    ref = CrossEncoder(str(path), device="cpu", max_length=max_length)
    got = np.array(ours.score(_pairs()))
    want = ref.predict(_pairs(), batch_size=5)
    assert len(set(np.round(got, 6))) > 5
    assert np.abs(got - want).max() <= 1e-5
    assert np.argsort(-got).tolist() == np.argsort(-want).tolist()


def test_recipes_agree_when_nothing_is_truncated(bert_ce: Path) -> None:
    short = [(QUERY, d) for d in corpus(seed=9, n=10, min_words=3, max_words=20)]
    flag = Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=128)
    plain = Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=128, truncation="longest_first")
    assert np.allclose(flag.score(short), plain.score(short), atol=1e-6)


def test_recipes_differ_when_the_query_is_truncated(bert_ce: Path) -> None:
    pairs = [(LONG_QUERY, d) for d in corpus(seed=4, n=3, min_words=90, max_words=120)]
    flag = Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=48)
    plain = Reranker.from_pretrained(str(bert_ce), device="cpu", max_length=48, truncation="longest_first")
    assert not np.allclose(flag.score(pairs), plain.score(pairs), atol=1e-4)


def test_raw_scores_are_logits(bert_ce: Path) -> None:
    pairs = _pairs()[:5]
    norm = np.array(Reranker.from_pretrained(str(bert_ce), device="cpu").score(pairs))
    raw = np.array(Reranker.from_pretrained(str(bert_ce), device="cpu", normalize=False).score(pairs))
    assert np.allclose(norm, 1 / (1 + np.exp(-raw)), atol=1e-7)
    assert ((norm > 0) & (norm < 1)).all()


def test_identity_activation_declared_in_config_is_honoured(bert_ce: Path, tmp_path: Path) -> None:
    """ms-marco cross-encoders declare Identity: their official scores are the raw logits."""
    from sentence_transformers import CrossEncoder

    folder = tmp_path / "msmarco-like"
    folder.mkdir()
    for item in bert_ce.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
    (folder / "config.json").write_text(json.dumps(config))
    pairs = _pairs()[:6]
    ours = Reranker.from_pretrained(str(folder), device="cpu", truncation="longest_first").score(pairs)
    ref = CrossEncoder(str(folder), device="cpu").predict(pairs)
    assert np.abs(np.array(ours) - ref).max() <= 1e-5
    assert min(ours) < 0 or max(ours) > 1  # logits, not squashed into (0, 1)
