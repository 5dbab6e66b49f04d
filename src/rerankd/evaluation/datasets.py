"""Evaluation inputs from local files: BEIR-layout datasets, TREC run files and JSONL query-document pairs.

BEIR layout (https://github.com/beir-cellar/beir)::

    folder/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."}
    folder/queries.jsonl       {"_id": "q1", "text": "..."}
    folder/qrels/test.tsv      query-id <TAB> corpus-id <TAB> score   (first line may be a header)

A TREC run file has one line per retrieved document: ``qid Q0 docid rank score tag``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rerankd.errors import InvalidInput
from rerankd.jsonl import json_objects

logger = logging.getLogger(__name__)

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR dataset.

    ``corpus`` maps document ids to the text a model sees (``title + " " + text``, as BEIR does);
    ``queries`` holds only the queries of ``split`` with at least one relevant judgement (relevance > 0),
    in qrels file order; ``qrels`` maps query id -> document id -> graded relevance.
    """

    name: str
    split: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels


@dataclass(frozen=True)
class QueryDocumentPair:
    query: str
    document: str


def _required_file(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise InvalidInput(f"{folder} is not a BEIR dataset folder: {name} is missing")
    return path


def load_corpus(path: Path) -> dict[str, str]:
    corpus: dict[str, str] = {}
    for number, item in json_objects(path):
        if "_id" not in item:
            raise InvalidInput(f'{path}:{number} needs an "_id" field')
        title, text = str(item.get("title") or "").strip(), str(item.get("text") or "").strip()
        corpus[str(item["_id"])] = f"{title} {text}".strip()
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, item in json_objects(path):
        if "_id" not in item or not isinstance(item.get("text"), str):
            raise InvalidInput(f'{path}:{number} needs "_id" and "text" fields')
        queries[str(item["_id"])] = item["text"]
    return queries


def load_qrels(path: Path) -> Qrels:
    """Graded judgements from a BEIR qrels TSV (3 columns) or a TREC qrels file (4 columns)."""
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) not in (3, 4):
                raise InvalidInput(f"{path}:{number} needs 3 (BEIR) or 4 (TREC) columns")
            qid, docid, grade = fields[0], fields[-2], fields[-1]
            try:
                relevance = int(float(grade))
            except ValueError as exc:
                if number == 1:  # header line
                    continue
                raise InvalidInput(f"{path}:{number}: relevance {grade!r} is not a number") from exc
            qrels.setdefault(qid, {})[docid] = relevance
    return qrels


def load_beir(folder: str | Path, split: str = "test", max_queries: int | None = None) -> BeirDataset:
    """Load one split of a BEIR-layout folder; ``max_queries`` keeps the first N judged queries."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInput(f"no such dataset folder: {root}")
    corpus = load_corpus(_required_file(root, "corpus.jsonl"))
    if not corpus:
        raise InvalidInput(f"{root}/corpus.jsonl holds no document")
    all_queries = load_queries(_required_file(root, "queries.jsonl"))
    qrels = load_qrels(_required_file(root, f"qrels/{split}.tsv"))
    queries: dict[str, str] = {}
    for qid, judged in qrels.items():
        if qid not in all_queries:
            logger.warning("query %s is judged in qrels/%s.tsv but missing from queries.jsonl", qid, split)
        elif any(grade > 0 for grade in judged.values()):
            queries[qid] = all_queries[qid]
    skipped = len(qrels) - len(queries)
    if skipped:
        logger.info("%d judged queries have no text or no relevant document; they are not evaluated", skipped)
    if max_queries is not None:
        queries = dict(list(queries.items())[:max_queries])
    if not queries:
        raise InvalidInput(f"{root} has no query with a relevant judgement in qrels/{split}.tsv")
    kept_qrels = {qid: qrels[qid] for qid in queries}
    return BeirDataset(name=root.name, split=split, corpus=corpus, queries=queries, qrels=kept_qrels)


def load_trec_run(path: str | Path) -> Run:
    """A TREC run file as query id -> document id -> score."""
    source = Path(path)
    if not source.is_file():
        raise InvalidInput(f"no such run file: {source}")
    run: Run = {}
    with source.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise InvalidInput(f"{source}:{number} needs 6 columns: qid Q0 docid rank score tag")
            try:
                score = float(fields[4])
            except ValueError as exc:
                raise InvalidInput(f"{source}:{number}: score {fields[4]!r} is not a number") from exc
            run.setdefault(fields[0], {})[fields[2]] = score
    return run


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, tag: str = "rerankd") -> None:
    """Write ``run`` as a TREC run file, each query's documents best first."""
    from rerankd.evaluation.metrics import ranked_documents

    lines = []
    for qid, scores in run.items():
        for rank, docid in enumerate(ranked_documents(scores), start=1):
            lines.append(f"{qid} Q0 {docid} {rank} {scores[docid]!r} {tag}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")


def load_pairs_jsonl(path: str | Path) -> list[QueryDocumentPair]:
    """Query-document pairs from JSONL objects with "query" and "document" (or "text"/"passage") strings."""
    source = Path(path)
    if not source.is_file():
        raise InvalidInput(f"no such pairs file: {source}")
    pairs = []
    for number, item in json_objects(source):
        document = next((item[key] for key in ("document", "text", "passage") if key in item), None)
        query = item.get("query")
        if not isinstance(query, str) or not isinstance(document, str):
            raise InvalidInput(f'{source}:{number} needs "query" and "document" strings')
        pairs.append(QueryDocumentPair(query, document))
    if not pairs:
        raise InvalidInput(f"{source} holds no pairs")
    return pairs
