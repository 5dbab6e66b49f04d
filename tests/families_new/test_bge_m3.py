"""bge-m3 as a scorer vs FlagEmbedding's BGEM3FlagModel.compute_score on a tiny XLM-R with its three heads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.errors import InvalidInput
from rerankd.families.base import CallOptions
from rerankd.loading import resolve_model
from rerankd.multi_output import embed_outputs
from rerankd.registry import detect_family
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
OTHER_QUERY = "where is the capital city of france"
MODES = {"dense": (1, 0, 0), "sparse": (0, 1, 0), "colbert": (0, 0, 1)}


def _docs() -> list[str]:
    return corpus(seed=3, n=10, min_words=3, max_words=40) + corpus(seed=4, n=3, min_words=90, max_words=160)


def _pairs() -> list[tuple[str, str]]:
    docs = _docs()
    return [(QUERY, d) for d in docs] + [(OTHER_QUERY, d) for d in docs[:5]]


def _load(path: Path, **options: Any) -> Reranker:
    return Reranker.from_pretrained(str(path), device="cpu", dtype="float32", **options)


def _reference(path: Path, max_length: int) -> Any:
    from FlagEmbedding import BGEM3FlagModel

    return BGEM3FlagModel(
        str(path), use_fp16=False, devices=["cpu"], query_max_length=max_length, passage_max_length=max_length
    )


def test_detected_from_folder(m3_path: Path) -> None:
    assert detect_family(resolve_model(str(m3_path))).name == "bge-m3"
    reranker = _load(m3_path)
    assert reranker.info.family == "bge-m3"
    assert reranker.family.activation == "identity"


@pytest.mark.oracle
@pytest.mark.parametrize("max_length", [512, 48])
def test_each_score_and_the_combination_match_compute_score(m3_path: Path, max_length: int) -> None:
    """batch_size=1: compute_score pads nothing (see the family's padding note)."""
    pairs = _pairs()
    reference = _reference(m3_path, max_length)
    weights = [0.4, 0.2, 0.4]
    want = reference.compute_score(pairs, batch_size=1, weights_for_different_modes=weights)
    for mode, mode_weights in MODES.items():
        got = np.array(
            _load(m3_path, score_weights=mode_weights, max_length=max_length, query_max_length=max_length).score(pairs)
        )
        assert np.abs(got - np.array(want[mode])).max() <= 1e-4, mode
        assert got.std() > 0.01, mode
    combined = np.array(
        _load(m3_path, score_weights=weights, max_length=max_length, query_max_length=max_length).score(pairs)
    )
    expected = np.array(want["colbert+sparse+dense"])
    assert np.abs(combined - expected).max() <= 1e-4
    assert np.argsort(-combined).tolist() == np.argsort(-expected).tolist()
    default = np.array(_load(m3_path, max_length=max_length, query_max_length=max_length).score(pairs))
    equal = reference.compute_score(pairs, batch_size=1)["colbert+sparse+dense"]  # reference default [1, 1, 1]
    assert np.abs(default - np.array(equal)).max() <= 1e-4


def test_weights_per_call(m3_path: Path) -> None:
    reranker = _load(m3_path)
    family: Any = reranker.family
    batch = family.encode_pairs(QUERY, _docs(), CallOptions())
    dense = family.score(batch, CallOptions(score_weights=(1.0, 0.0, 0.0))).squeeze(1)
    sparse = family.score(batch, CallOptions(score_weights=(0.0, 1.0, 0.0))).squeeze(1)
    mixed = family.score(batch, CallOptions(score_weights=(3.0, 1.0, 0.0))).squeeze(1)
    assert np.allclose(mixed.numpy(), ((3 * dense + sparse) / 4).numpy(), atol=1e-6)
    with pytest.raises(InvalidInput, match="score_weights"):
        family.encode_pairs(QUERY, ["x"], CallOptions(score_weights=(1.0, -1.0, 0.0)))


def test_document_vectors_are_cached(m3_path: Path) -> None:
    reranker = _load(m3_path)
    cache = reranker.family.cache
    first = reranker.score(_pairs())
    misses = cache.misses
    assert misses == len(_docs()) and len(cache) == len(_docs())
    again = reranker.score([(OTHER_QUERY, d) for d in _docs()])
    assert cache.misses == misses and cache.hits >= len(_docs())
    assert np.allclose(again[:5], first[-5:], atol=1e-6)


def test_batch_invariance(m3_path: Path) -> None:
    reranker = _load(m3_path, batch_tokens=100_000)
    together = np.array(reranker.score(_pairs()))
    reranker.family.cache.clear()
    alone = np.array([_load(m3_path).score([pair])[0] for pair in _pairs()[:5]])
    assert np.abs(together[:5] - alone).max() <= 1e-5


@pytest.mark.oracle
def test_embed_outputs_match_encode(m3_path: Path) -> None:
    texts = _docs()[:6]
    reference = _reference(m3_path, 512).encode(
        texts, batch_size=1, return_dense=True, return_sparse=True, return_colbert_vecs=True
    )
    got = embed_outputs(_load(m3_path), texts, output=("dense", "sparse", "multi_vector"))
    assert got.dense is not None and got.sparse is not None and got.multi_vector is not None
    assert np.abs(got.dense - reference["dense_vecs"]).max() <= 1e-5
    for ours, theirs in zip(got.sparse, reference["lexical_weights"], strict=True):
        assert set(ours) == {int(k) for k in theirs}
        assert all(abs(ours[int(k)] - float(v)) <= 1e-5 for k, v in theirs.items())
    for ours, theirs in zip(got.multi_vector, reference["colbert_vecs"], strict=True):
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-5


def test_embed_outputs_refuses_what_the_model_lacks(m3_path: Path, bert_ce: Path) -> None:
    with pytest.raises(InvalidInput, match="output"):
        embed_outputs(_load(m3_path), ["x"], output=("pooled",))
    with pytest.raises(InvalidInput, match="no sparse or multi-vector"):
        embed_outputs(_load(bert_ce), ["x"], output=("sparse",))


# Computed once from the seeded fixture (default weights 1, 1, 1); a change here means the recipe or the math moved.
GOLDEN = {0: 0.887148, 5: 1.349156, 12: 2.461768, 14: 0.350838}


def test_golden_scores(m3_path: Path) -> None:
    pairs = _pairs()
    got = _load(m3_path).score([pairs[i] for i in GOLDEN])
    assert np.allclose(got, list(GOLDEN.values()), atol=1e-4), got


def test_weights_per_call_through_score_options(m3_path: Path) -> None:
    """ScoreOptions.score_weights reaches the forward pass (CallOptions: part of the batch key)."""
    from rerankd.jobs import ScoreOptions
    from rerankd.validation import check_pairs

    pairs = check_pairs(_pairs())
    reranker = _load(m3_path)
    per_call = [row[0] for row in reranker.rows(pairs, ScoreOptions(score_weights=(0.0, 0.0, 1.0)))]
    loaded = _load(m3_path, score_weights=(0.0, 0.0, 1.0)).score(list(pairs))
    assert np.allclose(per_call, loaded, atol=1e-6)
    assert reranker.prepare_pairs(pairs, ScoreOptions(score_weights=(1.0, 0.0, 0.0))).key[1].score_weights == (1, 0, 0)
