"""Dense retrieval with the real all-MiniLM-L6-v2 (exact and HNSW), hybrid fusion, and Pipeline(retriever,
reranker) with a real cross-encoder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from rerankd.errors import InvalidInput
from rerankd.pipeline import (
    BM25Retriever,
    DenseRetriever,
    Document,
    HybridRetriever,
    IndexWriter,
    Pipeline,
    SearchIndex,
    make_retriever,
)
from rerankd.pipeline.base import Candidate
from tests.pipeline.conftest import DOCUMENTS

if TYPE_CHECKING:
    from rerankd import Reranker


def ids(candidates: list) -> list[str]:
    return [c.id for c in candidates]


def test_dense_scores_are_the_cosine_of_minilm_embeddings(dense_index: Path, encoder: Reranker) -> None:
    hits = DenseRetriever(dense_index, encoder, exact=True).retrieve("Which city is the capital of Germany?", k=3)
    assert ids(hits)[0] == "d05"
    query = encoder.embed(["Which city is the capital of Germany?"], role="query")[0]
    berlin = encoder.embed([DOCUMENTS[4].body])[0]
    assert hits[0].score == pytest.approx(float(query @ berlin), abs=1e-5)
    assert hits[0].score > hits[1].score > hits[2].score


def test_hnsw_finds_what_exact_search_finds(dense_index: Path, encoder: Reranker) -> None:
    exact = DenseRetriever(dense_index, encoder, exact=True)
    graph = DenseRetriever(dense_index, encoder)
    assert SearchIndex(dense_index).snapshot().hnsw() is not None
    for query in ["what is a panda?", "a hot drink", "how do plants make food", "French cities"]:
        a, b = exact.retrieve(query, k=5), graph.retrieve(query, k=5)
        assert ids(a) == ids(b)
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


@pytest.mark.parametrize("exact", [True, False])
def test_dense_filters(dense_index: Path, encoder: Reranker, exact: bool) -> None:
    retriever = DenseRetriever(dense_index, encoder, exact=exact)
    assert ids(retriever.retrieve("panda", k=3, filters={"lang": "fr"})) == ["d09"]
    hits = retriever.retrieve("a large city", k=10, filters={"tags": "city", "year": {"gte": 2016}})
    assert set(ids(hits)) == {"d04", "d05"}
    assert retriever.retrieve("panda", k=3, filters={"lang": "xx"}) == []


def test_dense_updates_reach_the_hnsw_graph(tmp_path: Path, encoder: Reranker, minilm_path: Path) -> None:
    from rerankd.pipeline import IndexConfig

    config = IndexConfig(dense_model=str(minilm_path), hnsw=True)
    with IndexWriter(tmp_path, config, encoder=encoder) as writer:
        writer.upsert(DOCUMENTS)
    retriever = DenseRetriever(tmp_path, encoder)
    assert ids(retriever.retrieve("roasted coffee beans", k=1)) == ["d08"]
    with IndexWriter(tmp_path, encoder=encoder) as writer:
        writer.delete(["d08"])
        writer.upsert([Document("tea", "Tea is a drink brewed from the leaves of the tea plant.", "Tea")])
    hits = retriever.retrieve("roasted coffee beans", k=10)
    assert "d08" not in ids(hits) and len(hits) == len(DOCUMENTS)
    assert ids(retriever.retrieve("a drink made from leaves", k=1)) == ["tea"]
    snapshot = SearchIndex(tmp_path).snapshot()
    assert len(snapshot.hnsw()) == snapshot.manifest.live == len(DOCUMENTS)


def test_bm25_only_index_refuses_dense(bm25_index: Path, encoder: Reranker) -> None:
    with pytest.raises(InvalidInput, match="has no vectors"):
        DenseRetriever(bm25_index, encoder).retrieve("panda")


def _candidate(doc_id: str, score: float, rank: int) -> Candidate:
    return Candidate(Document(doc_id, doc_id), score, rank)


class FixedRetriever:
    def __init__(self, name: str, hits: list[Candidate]) -> None:
        self.name, self.hits = name, hits

    def retrieve(self, query: str, k: int = 100, filters: dict | None = None) -> list[Candidate]:
        return self.hits[:k]


def test_rrf_and_weighted_fusion_by_hand() -> None:
    lexical = FixedRetriever("a", [_candidate("x", 9.0, 1), _candidate("y", 5.0, 2), _candidate("z", 1.0, 3)])
    dense = FixedRetriever("b", [_candidate("y", 0.9, 1), _candidate("w", 0.5, 2)])
    rrf = HybridRetriever(lexical, dense).retrieve("q", k=10)
    assert ids(rrf) == ["y", "x", "w", "z"]
    assert rrf[0].score == pytest.approx(1 / 62 + 1 / 61)
    assert rrf[1].score == pytest.approx(1 / 61)
    weighted = HybridRetriever(lexical, dense, fusion="weighted", weights=(0.7, 0.3), depth=10).retrieve("q", k=2)
    # lexical min-max: x 1, y 0.5, z 0; dense: y 1, w 0
    assert ids(weighted) == ["x", "y"]
    assert [h.score for h in weighted] == pytest.approx([0.7, 0.7 * 0.5 + 0.3])
    with pytest.raises(InvalidInput, match="fusion"):
        HybridRetriever(lexical, dense, fusion="max")  # type: ignore[arg-type]


def test_hybrid_over_the_index_combines_both_lists(dense_index: Path, encoder: Reranker) -> None:
    hybrid = make_retriever("hybrid", dense_index, encoder)
    lexical = ids(BM25Retriever(dense_index).retrieve("panda restaurant", k=10))
    dense = ids(DenseRetriever(dense_index, encoder).retrieve("panda restaurant", k=10))
    fused = hybrid.retrieve("panda restaurant", k=10)
    assert ids(fused)[0] == "d10"  # first in both lists
    assert set(ids(fused)) == set(lexical) | set(dense)
    with pytest.raises(InvalidInput, match="unknown retriever"):
        make_retriever("splade", dense_index)


def test_pipeline_reranks_the_candidates_with_the_reranker_scores(bm25_index: Path, bert_ce: Path) -> None:
    from rerankd import Reranker

    reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    pipeline = Pipeline(BM25Retriever(bm25_index), reranker)
    results = pipeline.search("panda", k=4, top_n=3)
    candidates = BM25Retriever(bm25_index).retrieve("panda", k=4)
    expected = reranker.score([("panda", c.document.body) for c in candidates])
    best = np.argsort(-np.asarray(expected), kind="stable")[:3]
    assert [h.id for h in results.hits] == [candidates[i].id for i in best]
    assert [h.score for h in results.hits] == pytest.approx([expected[i] for i in best], abs=1e-6)
    assert [h.first_stage_rank for h in results.hits] == [candidates[i].rank for i in best]
    assert [h.rank for h in results.hits] == [1, 2, 3]
    assert results.candidates == 4 and results.retriever == "bm25"
    assert set(results.timings_ms) == {"retrieve", "rerank", "total"}
    assert results.timings_ms["total"] >= results.timings_ms["rerank"] > 0
    body = results.to_dict()["results"][0]
    assert set(body) >= {"id", "score", "first_stage_score", "title", "text", "metadata"}


def test_pipeline_without_reranker_returns_the_first_stage(bm25_index: Path) -> None:
    results = Pipeline(BM25Retriever(bm25_index)).search("panda", k=10, top_n=2)
    assert [h.id for h in results.hits] == ids(BM25Retriever(bm25_index).retrieve("panda", k=2))
    assert all(h.rerank_score is None and h.score == h.first_stage_score for h in results.hits)
    assert results.model is None
