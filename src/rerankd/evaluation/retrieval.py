"""First-stage retrieval (BM25, a TREC run file, a bi-encoder) and re-ranking of its top-k candidates.

BM25 and bi-encoder runs use the search pipeline's retrievers (:mod:`rerankd.pipeline`) over a temporary index
of the corpus, so an offline evaluation ranks exactly as ``rerankd search`` and ``POST /v1/search`` do.

Every function returns a run: query id -> document id -> score, holding at most ``top_k`` documents per
query of the dataset.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rerankd.evaluation.datasets import BeirDataset, Run, load_trec_run
from rerankd.evaluation.metrics import ranked_documents
from rerankd.evaluation.progress import StageProgress, stage_counter
from rerankd.pipeline.base import MAX_K

if TYPE_CHECKING:
    from rerankd.pipeline import Retriever
    from rerankd.reranker import Reranker

logger = logging.getLogger(__name__)


def top_k_run(run: Mapping[str, Mapping[str, float]], top_k: int) -> Run:
    """The best ``top_k`` documents of each query, in trec_eval's order (ties by document id descending)."""
    return {qid: {docid: scores[docid] for docid in ranked_documents(scores)[:top_k]} for qid, scores in run.items()}


def _build_index(
    folder: Path, dataset: BeirDataset, progress: StageProgress | None, encoder: Reranker | None = None
) -> None:
    """The dataset's corpus in a search index (rerankd.pipeline): the same index ``rerankd index`` builds."""
    from rerankd.pipeline import Document, IndexConfig, IndexWriter

    name = encoder.info.path if encoder is not None else None
    advance = stage_counter(progress, "embed corpus" if encoder else "BM25 index", len(dataset.corpus))
    config = IndexConfig(language="english", dense_model=name)
    with IndexWriter(folder, config, encoder=encoder, progress=advance) as writer:
        writer.upsert(Document(doc_id, text) for doc_id, text in dataset.corpus.items())


def _search_all(
    retriever: Retriever, dataset: BeirDataset, top_k: int, stage: str, progress: StageProgress | None
) -> Run:
    qids = list(dataset.queries)
    advance = stage_counter(progress, stage, len(qids))
    run: Run = {}
    for qid in qids:
        run[qid] = {hit.id: hit.score for hit in retriever.retrieve(dataset.queries[qid], top_k)}
        if advance:
            advance(1)
    return run


def bm25_first_stage(dataset: BeirDataset, top_k: int = 100, progress: StageProgress | None = None) -> Run:
    """BM25 over the dataset's corpus with the search pipeline's retriever (tantivy; English analyzer: lowercase,
    stop words, Snowball stemming), exactly as ``rerankd search --retriever bm25`` ranks an index of it.

    Like Lucene, a query only retrieves documents that share at least one term with it.
    """
    from rerankd.pipeline import BM25Retriever

    with tempfile.TemporaryDirectory(prefix="rerankd-eval-bm25-") as folder:
        _build_index(Path(folder), dataset, progress)
        return _search_all(BM25Retriever(folder), dataset, min(top_k, MAX_K), "BM25 search", progress)


def run_file_first_stage(path: str | Path, dataset: BeirDataset, top_k: int = 100) -> Run:
    """The top-k of a TREC run file, restricted to the dataset's queries and corpus."""
    run = load_trec_run(path)
    unknown = {docid for scores in run.values() for docid in scores if docid not in dataset.corpus}
    if unknown:
        logger.warning("%d documents of %s are not in the corpus; they are dropped", len(unknown), path)
    kept = {
        qid: {docid: score for docid, score in run.get(qid, {}).items() if docid in dataset.corpus}
        for qid in dataset.queries
    }
    missing = sum(1 for scores in kept.values() if not scores)
    if missing:
        logger.warning("%d of %d queries have no candidates in %s", missing, len(kept), path)
    return top_k_run(kept, top_k)


def dense_first_stage(
    encoder: Reranker, dataset: BeirDataset, top_k: int = 100, progress: StageProgress | None = None
) -> Run:
    """Exact (brute-force) cosine search with a bi-encoder's embeddings: the search pipeline's dense retriever
    over an index of the corpus built with ``encoder``."""
    from rerankd.pipeline import DenseRetriever

    with tempfile.TemporaryDirectory(prefix="rerankd-eval-dense-") as folder:
        _build_index(Path(folder), dataset, progress, encoder)
        retriever = DenseRetriever(folder, encoder, exact=True)
        return _search_all(retriever, dataset, min(top_k, MAX_K), "dense search", progress)


def rerank_run(
    reranker: Reranker,
    dataset: BeirDataset,
    first_stage: Mapping[str, Mapping[str, float]],
    top_k: int = 100,
    *,
    instruction: str | None = None,
    cutoff_layers: Sequence[int] | None = None,
    progress: StageProgress | None = None,
    stage: str = "re-rank",
) -> Run:
    """Score each query's best ``top_k`` first-stage candidates with ``reranker``; the run holds its scores."""
    candidates = {
        qid: [d for d in ranked_documents(first_stage.get(qid, {}))[:top_k] if d in dataset.corpus]
        for qid in dataset.queries
    }
    advance = stage_counter(progress, stage, sum(len(docs) for docs in candidates.values()))
    run: Run = {}
    for qid, doc_ids in candidates.items():
        if not doc_ids:
            run[qid] = {}
            continue
        ranked = reranker.rank(
            dataset.queries[qid],
            [dataset.corpus[d] for d in doc_ids],
            instruction=instruction,
            cutoff_layers=cutoff_layers,
            progress=advance,
        )
        run[qid] = {doc_ids[item.index]: item.score for item in ranked}
    return run
