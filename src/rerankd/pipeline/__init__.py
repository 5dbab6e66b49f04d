"""Retrieve, then rerank: an embedded index (BM25 with tantivy, dense with any rerankd bi-encoder, hybrid fusion),
Elasticsearch and OpenSearch first stages, and :class:`Pipeline` joining a first stage to a reranker.

Optional dependencies are imported only when used: ``pip install 'rerankd[search]'`` for the embedded index,
``'rerankd[elasticsearch]'`` / ``'rerankd[opensearch]'`` for the remote first stages.
"""

from __future__ import annotations

from rerankd.pipeline.base import Candidate, Retriever
from rerankd.pipeline.documents import Document, FieldMap, InvalidCorpus, RowProblem, read_corpus
from rerankd.pipeline.filters import parse_filters
from rerankd.pipeline.pipeline import Pipeline, SearchHit, SearchResults
from rerankd.pipeline.retrievers import BM25Retriever, DenseRetriever, HybridRetriever, make_retriever
from rerankd.pipeline.store import SearchIndex
from rerankd.pipeline.writer import IndexConfig, IndexReport, IndexWriter

__all__ = [
    "BM25Retriever",
    "Candidate",
    "DenseRetriever",
    "Document",
    "FieldMap",
    "HybridRetriever",
    "IndexConfig",
    "IndexReport",
    "IndexWriter",
    "InvalidCorpus",
    "Pipeline",
    "Retriever",
    "RowProblem",
    "SearchHit",
    "SearchIndex",
    "SearchResults",
    "make_retriever",
    "parse_filters",
    "read_corpus",
]
