"""Late-interaction ColBERT (PyLate folders) vs PyLate's own encode + rerank (its own venv) on tiny random models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rerankd import Reranker
from rerankd.families.base import CallOptions
from rerankd.families.late_interaction import VectorCache
from rerankd.loading import resolve_model
from rerankd.multi_output import embed_outputs
from rerankd.registry import detect_family
from tests.families_new.pylate_oracle import PylateOracle
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
PUNCT_QUERY = "paris, france: the capital?!"
LONG_QUERY = " ".join(["where is the capital city of france"] * 8)


def _docs() -> list[str]:
    return corpus(seed=3, n=10, min_words=3, max_words=40) + corpus(seed=4, n=3, min_words=150, max_words=220)


def _pairs() -> list[tuple[str, str]]:
    docs = _docs()
    return [(QUERY, d) for d in docs] + [(PUNCT_QUERY, d) for d in docs[:4]] + [(LONG_QUERY, d) for d in docs[:4]]


def _load(path: Path, **options: Any) -> Reranker:
    return Reranker.from_pretrained(str(path), device="cpu", dtype="float32", **options)


@pytest.mark.parametrize("fixture", ["colbert_path", "jina_colbert_path"])
def test_detected_from_pylate_folder(request: pytest.FixtureRequest, fixture: str) -> None:
    path: Path = request.getfixturevalue(fixture)
    assert detect_family(resolve_model(str(path))).name == "colbert"
    assert _load(path).info.family == "colbert"


@pytest.mark.oracle
@pytest.mark.parametrize("fixture", ["colbert_path", "jina_colbert_path"])
def test_matches_pylate(request: pytest.FixtureRequest, fixture: str, pylate_oracle: PylateOracle) -> None:
    path: Path = request.getfixturevalue(fixture)
    pairs = _pairs()
    got = np.array(_load(path).score(pairs))
    want = np.array(pylate_oracle.score(path, pairs))
    assert np.abs(got - want).max() <= 1e-4
    assert np.argsort(-got).tolist() == np.argsort(-want).tolist()
    assert got.std() > 0.3


def test_query_layout_markers_and_expansion(colbert_path: Path, jina_colbert_path: Path) -> None:
    family: Any = _load(colbert_path).family
    query = family.encode_texts([QUERY], "query")[0]
    assert len(query) == 32 and query.input_ids[1] == family.query_marker
    assert query.input_ids[-1] == family.expansion_id  # expanded with [MASK]
    doc = family.encode_texts(["The giant panda."], "document")[0]
    assert doc.input_ids[1] == family.document_marker and family.expansion_id not in doc.input_ids
    long_doc = family.encode_texts([_docs()[-1]], "document")[0]
    assert len(long_doc) == 180 and long_doc.truncated
    jina: Any = _load(jina_colbert_path).family
    assert len(jina.encode_texts([QUERY], "query")[0]) == 24 and jina.settings.attend_to_expansion_tokens


def test_lengths_from_options(colbert_path: Path) -> None:
    family: Any = _load(colbert_path, query_max_length=16, max_length=40).family
    assert len(family.encode_texts([QUERY], "query")[0]) == 16
    assert len(family.encode_texts([_docs()[-1]], "document")[0]) == 40


def test_skiplist_drops_punctuation_vectors(colbert_path: Path) -> None:
    reranker = _load(colbert_path)
    family: Any = reranker.family
    plain, punct = family.encode_texts(["panda bear", "panda, bear!"], "document")
    vectors = embed_outputs(reranker, ["panda bear", "panda, bear!"], output=("multi_vector",)).multi_vector
    assert vectors is not None
    assert len(punct) == len(plain) + 2 and vectors[1].shape == vectors[0].shape  # ',' and '!' give no vector
    assert np.abs(vectors[0] - vectors[1]).max() > 0  # but they are still attended to


def test_document_vectors_are_cached(colbert_path: Path) -> None:
    reranker = _load(colbert_path)
    cache: VectorCache[Any] = reranker.family.cache
    docs = _docs()
    first = reranker.score([(QUERY, d) for d in docs])
    assert cache.misses == len(docs) and cache.hits == 0
    again = reranker.score([(PUNCT_QUERY, d) for d in docs] + [(QUERY, d) for d in docs])
    assert cache.misses == len(docs) and cache.hits >= len(docs)  # a batch looks each distinct document up once
    assert np.allclose(again[len(docs) :], first, atol=1e-6)
    family: Any = reranker.family
    assert cache.bytes > 0 and cache.bytes <= cache.max_bytes
    small: VectorCache[Any] = VectorCache(max_bytes=4000)
    family.cache = small
    reranker.score([(QUERY, d) for d in docs])
    assert small.bytes <= 4000 and 0 < len(small) < len(docs)


def test_batch_invariance(colbert_path: Path) -> None:
    reranker = _load(colbert_path, batch_tokens=100_000)
    together = np.array(reranker.score(_pairs()))
    alone = np.array([_load(colbert_path).score([pair])[0] for pair in _pairs()[:5]])
    assert np.abs(together[:5] - alone).max() <= 1e-4


def test_query_encoded_once_per_request(colbert_path: Path) -> None:
    """A request cut into several token-budget batches runs its query through the encoder once (as PyLate does),
    not once per batch; the scores are those of one big batch."""
    import torch

    reranker = _load(colbert_path, batch_tokens=600)
    family: Any = reranker.family
    passes: list[bool] = []  # per encoder pass: a query pass?

    def count(module: torch.nn.Module, args: tuple[dict[str, torch.Tensor]]) -> None:
        passes.append(bool((args[0]["input_ids"][:, 1] == family.query_marker).all()))

    family.network.register_forward_pre_hook(count)
    pairs = [(QUERY, d) for d in _docs()]
    got = np.array(reranker.score(pairs))
    assert passes.count(False) >= 4 and passes.count(True) == 1  # several document batches, one query pass
    assert family.query_cache.misses == 1 and family.query_cache.hits == passes.count(False) - 1
    reranker.score(pairs[:2])
    assert passes.count(True) == 1  # the same query in a later request is not encoded again either
    one_batch = np.array(_load(colbert_path, batch_tokens=100_000).score(pairs))
    assert np.abs(got - one_batch).max() <= 1e-4


def test_score_equals_maxsim_of_embed_outputs(colbert_path: Path) -> None:
    reranker = _load(colbert_path)
    docs = _docs()[:3]
    q = embed_outputs(reranker, [QUERY], role="query", output=("multi_vector",)).multi_vector
    d = embed_outputs(reranker, docs, output=("multi_vector",)).multi_vector
    assert q is not None and d is not None and q[0].shape[0] == 32
    manual = [float((q[0] @ vectors.T).max(axis=1).sum()) for vectors in d]
    assert np.allclose(reranker.score([(QUERY, doc) for doc in docs]), manual, atol=1e-4)
    family: Any = reranker.family
    assert family.score(family.encode_pairs(QUERY, docs, CallOptions()), CallOptions()).shape == (3, 1)


# Computed once from the seeded fixture; a change here means the recipe or the model math moved.
GOLDEN = {0: 23.485613, 5: 25.503267, 13: 25.793192, 17: 9.518319}


def test_golden_scores(colbert_path: Path) -> None:
    pairs = _pairs()
    got = _load(colbert_path).score([pairs[i] for i in GOLDEN])
    assert np.allclose(got, list(GOLDEN.values()), atol=1e-4), got


def test_cache_is_emptied_when_the_weights_change_dtype(colbert_path: Path) -> None:
    """The dtype="auto" guard scores its probe in float32, casts, and scores again: no float32 vector may be reused."""
    import torch

    from rerankd.families.base import cast_parameters

    reranker = _load(colbert_path)
    pairs = [(QUERY, d) for d in _docs()[:4]]
    fp32 = np.array(reranker.score(pairs))
    cache = reranker.family.cache
    cast_parameters(reranker.family.weights(), torch.bfloat16)
    bf16 = np.array(reranker.score(pairs))
    assert cache.misses == 8 and len(cache) == 4
    assert reranker.family.query_cache.misses == 2  # the query's float32 vectors are not reused either
    assert 0 < np.abs(bf16 - fp32).max() < 0.05 * np.abs(fp32).max()
