"""First-stage retrieval (BM25, a TREC run file, a bi-encoder) and re-ranking of its top-k candidates.

Every function returns a run: query id -> document id -> score, holding at most ``top_k`` documents per
query of the dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rerankd.evaluation.datasets import BeirDataset, Run, load_trec_run
from rerankd.evaluation.dependencies import import_eval_module
from rerankd.evaluation.metrics import ranked_documents
from rerankd.evaluation.progress import StageProgress, stage_counter

if TYPE_CHECKING:
    from rerankd.reranker import Reranker

logger = logging.getLogger(__name__)

BM25_CHUNK = 1024
EMBED_CHUNK = 256


def top_k_run(run: Mapping[str, Mapping[str, float]], top_k: int) -> Run:
    """The best ``top_k`` documents of each query, in trec_eval's order (ties by document id descending)."""
    return {qid: {docid: scores[docid] for docid in ranked_documents(scores)[:top_k]} for qid, scores in run.items()}


def bm25_first_stage(dataset: BeirDataset, top_k: int = 100, progress: StageProgress | None = None) -> Run:
    """BM25 (bm25s, Lucene variant, English stop words, no stemming) over the dataset's corpus.

    Like Lucene, a query only retrieves documents that share at least one term with it.
    """
    bm25s = import_eval_module("bm25s", "the BM25 first stage")
    tokenization = import_eval_module("bm25s.tokenization", "the BM25 first stage")
    doc_ids = list(dataset.corpus)
    texts = [dataset.corpus[docid] for docid in doc_ids]
    tokenizer = tokenization.Tokenizer(stopwords="en")
    tokenized: list[list[int]] = []
    advance = stage_counter(progress, "BM25 index", len(texts))
    for start in range(0, len(texts), BM25_CHUNK):
        chunk = texts[start : start + BM25_CHUNK]
        tokenized.extend(tokenizer.tokenize(chunk, update_vocab=True, show_progress=False, return_as="ids"))
        if advance:
            advance(len(chunk))
    retriever = bm25s.BM25()
    retriever.index(tokenized, show_progress=False)
    qids = list(dataset.queries)
    k = min(top_k, len(doc_ids))
    run: Run = {}
    advance = stage_counter(progress, "BM25 search", len(qids))
    for start in range(0, len(qids), BM25_CHUNK):
        chunk_ids = qids[start : start + BM25_CHUNK]
        query_tokens = tokenizer.tokenize(
            [dataset.queries[qid] for qid in chunk_ids], update_vocab=False, show_progress=False, return_as="ids"
        )
        indices, scores = retriever.retrieve(query_tokens, k=k, show_progress=False)
        for row, qid in enumerate(chunk_ids):
            run[qid] = {
                doc_ids[int(i)]: float(s) for i, s in zip(indices[row], scores[row], strict=True) if float(s) > 0.0
            }
        if advance:
            advance(len(chunk_ids))
    return run


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


def _embed_in_chunks(
    encoder: Reranker, texts: Sequence[str], role: str, stage: str, progress: StageProgress | None
) -> np.ndarray:
    advance = stage_counter(progress, stage, len(texts))
    parts = []
    for start in range(0, len(texts), EMBED_CHUNK):
        chunk = list(texts[start : start + EMBED_CHUNK])
        parts.append(encoder.embed(chunk, role="query" if role == "query" else "document"))
        if advance:
            advance(len(chunk))
    return np.concatenate(parts, axis=0)


def dense_first_stage(
    encoder: Reranker, dataset: BeirDataset, top_k: int = 100, progress: StageProgress | None = None
) -> Run:
    """Exact (brute-force) cosine search with a bi-encoder's embeddings."""
    doc_ids = list(dataset.corpus)
    qids = list(dataset.queries)
    documents = _embed_in_chunks(encoder, [dataset.corpus[d] for d in doc_ids], "document", "embed corpus", progress)
    queries = _embed_in_chunks(encoder, [dataset.queries[q] for q in qids], "query", "embed queries", progress)
    k = min(top_k, len(doc_ids))
    run: Run = {}
    for start in range(0, len(qids), EMBED_CHUNK):
        similarities = queries[start : start + EMBED_CHUNK] @ documents.T
        best = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
        for row, qid in enumerate(qids[start : start + EMBED_CHUNK]):
            run[qid] = {doc_ids[int(i)]: float(similarities[row, i]) for i in best[row]}
    return run


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
