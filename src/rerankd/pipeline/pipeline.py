"""``Pipeline(retriever, reranker)``: the first stage's best ``k`` candidates, re-ranked, best ``top_n`` returned
with both scores and the time each stage took."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rerankd.pipeline.base import Candidate, Retriever, check_k, check_query_text
from rerankd.pipeline.documents import Document

if TYPE_CHECKING:
    from rerankd.reranker import Reranker


@dataclass(frozen=True)
class SearchHit:
    """One result: the document, its final rank, the reranker's score (None without a reranker) and where the
    first stage put it."""

    document: Document
    rank: int
    score: float
    first_stage_score: float
    first_stage_rank: int
    rerank_score: float | None = None

    @property
    def id(self) -> str:
        return self.document.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rank": self.rank,
            "score": self.score,
            "rerank_score": self.rerank_score,
            "first_stage_score": self.first_stage_score,
            "first_stage_rank": self.first_stage_rank,
            "title": self.document.title,
            "text": self.document.text,
            "metadata": dict(self.document.metadata),
        }


@dataclass(frozen=True)
class SearchResults:
    query: str
    retriever: str
    model: str | None
    hits: list[SearchHit]
    candidates: int
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "retriever": self.retriever,
            "model": self.model,
            "candidates": self.candidates,
            "results": [hit.to_dict() for hit in self.hits],
            "timings_ms": self.timings_ms,
        }


def first_stage_hits(candidates: list[Candidate], top_n: int | None) -> list[SearchHit]:
    """Hits in first-stage order (no reranker)."""
    chosen = candidates[:top_n] if top_n else candidates
    return [SearchHit(c.document, c.rank, c.score, c.score, c.rank) for c in chosen]


def reranked_hits(candidates: list[Candidate], scores: list[float], top_n: int | None) -> list[SearchHit]:
    """Hits by reranker score, best first (ties keep first-stage order: ``jobs.ranking``, the order every rerank
    answer and the feedback join use), cut to ``top_n``."""
    from rerankd.jobs import ranking  # here: importing the pipeline (``rerankd index``) must not import torch

    chosen = ranking(scores, top_n)
    return [
        SearchHit(candidates[i].document, rank, scores[i], candidates[i].score, candidates[i].rank, scores[i])
        for rank, i in enumerate(chosen, start=1)
    ]


class Pipeline:
    """Retrieve, then rerank.

    >>> pipeline = Pipeline(BM25Retriever("idx"), Reranker.from_pretrained("BAAI/bge-reranker-v2-m3"))
    >>> results = pipeline.search("what is panda?", k=100, top_n=10, filters={"lang": "en"})
    >>> [(hit.id, hit.score, hit.first_stage_score) for hit in results.hits]

    The reranker reads each candidate's title and text (``Document.body``); ``max_chunks_per_doc`` /
    ``max_tokens_per_doc`` score long documents by their best chunk, as the reranker's own ``rank`` does.
    """

    def __init__(
        self,
        retriever: Retriever,
        reranker: Reranker | None = None,
        *,
        max_chunks_per_doc: int | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.max_chunks_per_doc = max_chunks_per_doc
        self.max_tokens_per_doc = max_tokens_per_doc

    def search(
        self, query: str, k: int = 100, top_n: int | None = 10, filters: dict[str, Any] | None = None
    ) -> SearchResults:
        check_query_text(query)
        check_k(k)
        if top_n is not None:
            check_k(top_n, "top_n")
        started = time.perf_counter()
        candidates = self.retriever.retrieve(query, k, filters)
        retrieved = time.perf_counter()
        if self.reranker is None or not candidates:
            hits = first_stage_hits(candidates, top_n)
        else:
            ranked = self.reranker.rank(
                query,
                [c.document.body for c in candidates],
                max_chunks_per_doc=self.max_chunks_per_doc,
                max_tokens_per_doc=self.max_tokens_per_doc,
            )
            scores = [0.0] * len(candidates)
            for item in ranked:
                scores[item.index] = item.score
            hits = reranked_hits(candidates, scores, top_n)
        finished = time.perf_counter()
        timings = {
            "retrieve": (retrieved - started) * 1000,
            "rerank": (finished - retrieved) * 1000,
            "total": (finished - started) * 1000,
        }
        model = self.reranker.info.name if self.reranker is not None else None
        return SearchResults(query, self.retriever.name, model, hits, len(candidates), timings)
