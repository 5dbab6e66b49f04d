"""First stages over the embedded index: BM25 (tantivy), dense (a rerankd bi-encoder; exact or HNSW) and hybrid
fusion of the two (reciprocal rank fusion or a weighted sum of min-max normalised scores)."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rerankd.errors import InvalidInput
from rerankd.pipeline.analysis import build_analyzer
from rerankd.pipeline.base import Candidate, Retriever, check_k, check_query_text, ranked
from rerankd.pipeline.documents import Document
from rerankd.pipeline.filters import parse_filters, tantivy_filter
from rerankd.pipeline.store import SearchIndex, Snapshot

if TYPE_CHECKING:
    from rerankd.reranker import Reranker

Fusion = Literal["rrf", "weighted"]
RetrieverName = Literal["bm25", "dense", "hybrid"]
SELECTIVE = 0.05  # a filter passing fewer live rows than this fraction is searched exactly, not with HNSW


def as_index(index: SearchIndex | str | Path) -> SearchIndex:
    return index if isinstance(index, SearchIndex) else SearchIndex(index)


def allowed_rows(snapshot: Snapshot, filters: dict[str, Any] | None) -> np.ndarray | None:
    """Boolean mask of the rows passing ``filters`` (None: no filter)."""
    conditions = parse_filters(filters)
    if not conditions:
        return None
    mask = np.zeros(snapshot.manifest.rows, dtype=bool)
    total = snapshot.searcher.num_docs
    if total:
        query = tantivy_filter(snapshot.index, snapshot.schema, conditions)
        hits = snapshot.searcher.search(query, total, count=False).hits
        mask[snapshot.rows_of([address for _, address in hits])] = True
    return mask


class BM25Retriever:
    """BM25 (tantivy's Lucene-style scoring, k1 = 1.2, b = 0.75) over title + text with the index's analyzer.
    A query matches the documents sharing at least one of its terms."""

    name = "bm25"

    def __init__(self, index: SearchIndex | str | Path) -> None:
        self.index = as_index(index)
        self._analyzers: dict[str, Any] = {}

    def terms(self, language: str, query: str) -> list[str]:
        if language not in self._analyzers:
            self._analyzers[language] = build_analyzer(language)
        return list(self._analyzers[language].analyze(query))

    def retrieve(self, query: str, k: int = 100, filters: dict[str, Any] | None = None) -> list[Candidate]:
        import tantivy

        check_query_text(query)
        check_k(k)
        conditions = parse_filters(filters)
        snapshot = self.index.snapshot()
        terms = self.terms(snapshot.manifest.language, query)
        if not terms or not snapshot.searcher.num_docs:
            return []
        schema = snapshot.schema
        text = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "body", term)) for term in terms]
        )
        if conditions:
            text = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, text), (tantivy.Occur.Must, tantivy_filter(snapshot.index, schema, conditions))]
            )
        hits = snapshot.searcher.search(text, k, count=False).hits
        rows = snapshot.rows_of([address for _, address in hits])
        return ranked([(snapshot.document(row), float(score)) for (score, _), row in zip(hits, rows, strict=True)])


class DenseRetriever:
    """Cosine similarity of the query's and the documents' bi-encoder embeddings (the model the index was
    built with). ``exact=None`` uses the index's HNSW graph when it has one, else exact search."""

    name = "dense"

    def __init__(
        self, index: SearchIndex | str | Path, encoder: Reranker | None = None, *, exact: bool | None = None
    ) -> None:
        self.index = as_index(index)
        self.encoder = encoder
        self.exact = exact
        self._lock = threading.Lock()

    def encoder_for(self, model: str) -> Reranker:
        with self._lock:
            if self.encoder is None:
                from rerankd.reranker import Reranker

                self.encoder = Reranker.from_pretrained(model)
            return self.encoder

    def embed_query(self, snapshot: Snapshot, query: str) -> np.ndarray:
        dense = snapshot.manifest.dense
        if dense is None:
            raise InvalidInput(f"{self.index.root} has no vectors: build it with --dense-model", param="retriever")
        vector = self.encoder_for(dense.model).embed([query], role="query")[0].astype(np.float32)
        if vector.shape[0] != dense.dim:
            raise InvalidInput(f"the query encoder gives {vector.shape[0]} dimensions, the index has {dense.dim}")
        return vector

    def retrieve(self, query: str, k: int = 100, filters: dict[str, Any] | None = None) -> list[Candidate]:
        check_query_text(query)
        check_k(k)
        snapshot = self.index.snapshot()
        vector = self.embed_query(snapshot, query)
        allowed = allowed_rows(snapshot, filters)
        graph = None if self.exact else snapshot.hnsw()
        if graph is not None and len(graph):
            rows, scores = self._approximate(snapshot, graph, vector, k, allowed)
        else:
            rows, scores = self._exhaustive(snapshot, vector, k, allowed)
        return ranked([(snapshot.document(int(r)), float(s)) for r, s in zip(rows, scores, strict=True)])

    @staticmethod
    def _exhaustive(
        snapshot: Snapshot, vector: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        mask = snapshot.live if allowed is None else snapshot.live & allowed
        candidates = np.flatnonzero(mask)
        if not len(candidates):
            return candidates, np.zeros(0, np.float32)
        similarities = (snapshot.vectors() @ vector)[candidates]
        count = min(k, len(candidates))
        best = np.argpartition(-similarities, count - 1)[:count]
        return candidates[best], similarities[best]

    def _approximate(
        self, snapshot: Snapshot, graph: Any, vector: np.ndarray, k: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        size = len(graph)
        if allowed is None:
            matches = graph.search(vector, min(k, size))
            return matches.keys.astype(np.int64), 1.0 - matches.distances
        passing = int((allowed & snapshot.live).sum())
        if passing == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        fraction = passing / max(1, snapshot.manifest.live)
        if fraction < SELECTIVE:
            return self._exhaustive(snapshot, vector, k, allowed)
        count = min(size, math.ceil(k / fraction * 1.5) + 10)
        matches = graph.search(vector, count)
        keys = matches.keys.astype(np.int64)
        keep = allowed[keys]
        if keep.sum() < min(k, passing) and count < size:
            return self._exhaustive(snapshot, vector, k, allowed)
        return keys[keep][:k], (1.0 - matches.distances)[keep][:k]


class HybridRetriever:
    """Lexical and dense candidates fused: ``rrf`` (reciprocal rank fusion, sum of 1 / (rrf_k + rank)) or
    ``weighted`` (each list's scores min-max normalised to [0, 1], then ``weights`` applied; a document
    missing from a list gets 0 there). ``weights`` (lexical, dense) default to (1, 1) for RRF, (0.5, 0.5)
    else. Each stage contributes its best ``depth`` (default: k) candidates."""

    name = "hybrid"

    def __init__(
        self,
        lexical: Retriever,
        dense: Retriever,
        *,
        fusion: Fusion = "rrf",
        rrf_k: int = 60,
        weights: tuple[float, float] | None = None,
        depth: int | None = None,
    ) -> None:
        weights = weights or ((1.0, 1.0) if fusion == "rrf" else (0.5, 0.5))
        if fusion not in ("rrf", "weighted"):
            raise InvalidInput(f"fusion must be rrf or weighted, got {fusion!r}", param="fusion")
        if rrf_k < 1 or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise InvalidInput("rrf_k must be >= 1 and weights >= 0 with a positive sum", param="fusion")
        self.lexical, self.dense = lexical, dense
        self.fusion, self.rrf_k, self.weights, self.depth = fusion, rrf_k, weights, depth

    def retrieve(self, query: str, k: int = 100, filters: dict[str, Any] | None = None) -> list[Candidate]:
        check_k(k)
        depth = max(k, self.depth or k)
        lists = [self.lexical.retrieve(query, depth, filters), self.dense.retrieve(query, depth, filters)]
        documents: dict[str, Document] = {}
        fused: dict[str, float] = {}
        for weight, candidates in zip(self.weights, lists, strict=True):
            contributions = self._contributions(candidates)
            for candidate in candidates:
                documents.setdefault(candidate.id, candidate.document)
                fused[candidate.id] = fused.get(candidate.id, 0.0) + weight * contributions[candidate.id]
        return ranked([(documents[i], score) for i, score in fused.items()])[:k]

    def _contributions(self, candidates: list[Candidate]) -> dict[str, float]:
        if self.fusion == "rrf":
            return {c.id: 1.0 / (self.rrf_k + c.rank) for c in candidates}
        if not candidates:
            return {}
        scores = [c.score for c in candidates]
        low, high = min(scores), max(scores)
        spread = high - low
        return {c.id: (c.score - low) / spread if spread > 0 else 1.0 for c in candidates}


def make_retriever(
    name: RetrieverName | str,
    index: SearchIndex | str | Path,
    encoder: Reranker | None = None,
    *,
    fusion: Fusion = "rrf",
    exact: bool | None = None,
) -> Retriever:
    """A retriever over the embedded index by name: ``bm25``, ``dense`` or ``hybrid``."""
    searched = as_index(index)
    if name == "bm25":
        return BM25Retriever(searched)
    if name == "dense":
        return DenseRetriever(searched, encoder, exact=exact)
    if name == "hybrid":
        return HybridRetriever(BM25Retriever(searched), DenseRetriever(searched, encoder, exact=exact), fusion=fusion)
    raise InvalidInput(f"unknown retriever {name!r}; use bm25, dense or hybrid", param="retriever")
