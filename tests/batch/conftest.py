"""Batch-job fixtures: seeded inputs (pairs, groups, a BEIR folder + run) and a tiny model with small steps."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rerankd import Reranker

WORDS = ["panda", "bear", "china", "bamboo", "paris", "capital", "france", "machine", "learning", "data", "model"]
# A small token budget makes the tiny model's steps small (a few dozen pairs), so jobs have many steps and shards.
BATCH_TOKENS = 128


def text(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def write_pairs(path: Path, n: int, seed: int = 0, ids: bool = True) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        record = {"query": text(rng, 1, 4), "document": text(rng, 1, 30)}
        if ids:
            record["id"] = f"pair-{i}"
        records.append(record)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def write_beir(folder: Path, queries: int = 4, docs: int = 30, seed: int = 1) -> dict[str, dict[str, str]]:
    """A BEIR folder and a run naming every document for every query (plus one unknown document per query)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = {f"d{i}": (text(rng, 1, 3), text(rng, 2, 25)) for i in range(docs)}
    topics = {f"q{i}": text(rng, 1, 4) for i in range(queries)}
    with (folder / "corpus.jsonl").open("w") as handle:
        for docid, (title, body) in corpus.items():
            handle.write(json.dumps({"_id": docid, "title": title, "text": body}) + "\n")
    with (folder / "queries.jsonl").open("w") as handle:
        for qid, query in topics.items():
            handle.write(json.dumps({"_id": qid, "text": query}) + "\n")
    with (folder / "run.trec").open("w") as handle:
        for qid in reversed(list(topics)):  # queries in run order q3, q2, ...
            ranked = [*rng.sample(list(corpus), len(corpus)), "missing-doc"]
            for rank, docid in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {docid} {rank} {100 - rank} bm25\n")
    return {"corpus": {d: f"{t} {b}".strip() for d, (t, b) in corpus.items()}, "queries": topics}


@pytest.fixture(scope="session")
def small_steps(bert_ce: Path) -> Reranker:
    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32", batch_tokens=BATCH_TOKENS)
