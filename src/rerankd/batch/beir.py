"""A BEIR folder plus a TREC run file as a batch source: the top ``k`` documents of each query in the run.

Neither the corpus nor the run has to fit in memory: both are streamed once into an SQLite file in the job's
state folder (built under a temporary name and renamed, so a killed job never sees half of it). That file holds
the pairs to score in a fixed order — queries in the order they first appear in the run, each query's documents
by descending run score (ties in run-file order) — and a shard is a range of that order.

Document text is ``title + " " + text``, as BEIR and ``rerankd eval`` build it. Run lines whose query or
document is missing from the folder are skipped and counted (:attr:`BeirRunSource.skipped`).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from rerankd.batch.sources import Cursor, PairRow, Scan, file_identity
from rerankd.errors import InvalidInput
from rerankd.jsonl import json_objects

STAGED = "beir-run.sqlite"
_BATCH = 10_000


class BeirRunSource:
    """The top-``top_k`` documents per query of ``run`` over the BEIR folder ``folder``."""

    layout = "beir-run"

    def __init__(self, folder: Path, run: Path, top_k: int, staged: Path) -> None:
        for name in ("corpus.jsonl", "queries.jsonl"):
            if not (folder / name).is_file():
                raise InvalidInput(f"{folder} is not a BEIR dataset folder: {name} is missing")
        if not run.is_file():
            raise InvalidInput(f"no such run file: {run}")
        if top_k < 1:
            raise InvalidInput("--top-k must be at least 1")
        self.folder, self.run, self.top_k, self.staged = folder, run, top_k, staged
        self.skipped = 0

    def identity(self) -> dict[str, Any]:
        files = [file_identity(self.folder / name) for name in ("corpus.jsonl", "queries.jsonl")]
        return {"kind": "beir-run", "files": files, "run": file_identity(self.run), "top_k": self.top_k}

    def start(self) -> Cursor:
        """The cursor of the first pair (staging the folder and run on first use)."""
        if not self.staged.exists():
            self._stage()
        return {"pair": 0}

    def scan(self, shard_rows: int) -> Scan:
        self.start()
        with closing(self._connect()) as db:
            total = db.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
            self.skipped = db.execute("SELECT value FROM facts WHERE name = 'skipped'").fetchone()[0]
        if total == 0:
            raise InvalidInput(f"no run line of {self.run} names a query and a document of {self.folder}")
        return Scan(total, [{"pair": start} for start in range(0, total, shard_rows)], "str", "str")

    def read(self, cursor: Cursor, count: int) -> Iterator[PairRow]:
        sql = (
            "SELECT p.qid, q.text, p.docid, c.text FROM pairs p JOIN queries q ON q.qid = p.qid "
            "JOIN corpus c ON c.docid = p.docid WHERE p.n >= ? ORDER BY p.n LIMIT ?"
        )
        with closing(self._connect()) as db:
            for qid, query, docid, document in db.execute(sql, (cursor["pair"], count)):
                yield PairRow(docid, query, document, qid)

    # ------------------------------------------------------------------ staging
    def _connect(self, path: Path | None = None) -> sqlite3.Connection:
        return sqlite3.connect(str(path or self.staged))

    def _stage(self) -> None:
        partial = self.staged.with_name(self.staged.name + ".partial")
        partial.unlink(missing_ok=True)
        db = self._connect(partial)
        try:
            db.executescript(
                "CREATE TABLE corpus (docid TEXT PRIMARY KEY, text TEXT NOT NULL);"
                "CREATE TABLE queries (qid TEXT PRIMARY KEY, text TEXT NOT NULL);"
                "CREATE TABLE run (line INTEGER PRIMARY KEY, qid TEXT, docid TEXT, score REAL);"
                "CREATE TABLE facts (name TEXT PRIMARY KEY, value INTEGER);"
            )
            _insert(db, "INSERT OR REPLACE INTO corpus VALUES (?, ?)", _corpus(self.folder / "corpus.jsonl"))
            _insert(db, "INSERT OR REPLACE INTO queries VALUES (?, ?)", _queries(self.folder / "queries.jsonl"))
            _insert(db, "INSERT INTO run VALUES (?, ?, ?, ?)", _run_lines(self.run))
            self._select_pairs(db)
            db.commit()
        finally:
            db.close()
        os.replace(partial, self.staged)

    def _select_pairs(self, db: sqlite3.Connection) -> None:
        db.executescript(
            "CREATE TABLE pairs (n INTEGER PRIMARY KEY, qid TEXT, docid TEXT);"
            "CREATE TEMP TABLE first_seen AS SELECT qid, MIN(line) AS line FROM run GROUP BY qid;"
        )
        db.execute(
            "INSERT INTO pairs (qid, docid) SELECT qid, docid FROM ("
            " SELECT r.qid, r.docid, f.line AS query_order, ROW_NUMBER() OVER ("
            "  PARTITION BY r.qid ORDER BY r.score DESC, r.line) AS position"
            " FROM run r JOIN first_seen f ON f.qid = r.qid"
            " WHERE r.qid IN (SELECT qid FROM queries) AND r.docid IN (SELECT docid FROM corpus))"
            " WHERE position <= ? ORDER BY query_order, position",
            (self.top_k,),
        )
        known = "r.qid IN (SELECT qid FROM queries) AND r.docid IN (SELECT docid FROM corpus)"
        skipped = db.execute(f"SELECT COUNT(*) FROM run r WHERE NOT ({known})").fetchone()[0]
        db.execute("INSERT INTO facts VALUES ('skipped', ?)", (skipped,))


def _insert(db: sqlite3.Connection, sql: str, rows: Iterator[tuple[Any, ...]]) -> None:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= _BATCH:
            db.executemany(sql, chunk)
            chunk.clear()
    db.executemany(sql, chunk)


def _corpus(path: Path) -> Iterator[tuple[str, str]]:
    for _, item in json_objects(path, required="_id"):
        title, text = str(item.get("title") or "").strip(), str(item.get("text") or "").strip()
        yield str(item["_id"]), f"{title} {text}".strip()


def _queries(path: Path) -> Iterator[tuple[str, str]]:
    for number, item in json_objects(path, required="_id"):
        text = str(item.get("text") or "").strip()
        if not text:
            raise InvalidInput(f"{path}:{number}: query {item['_id']!r} has no text")
        yield str(item["_id"]), text


def _run_lines(path: Path) -> Iterator[tuple[int, str, str, float]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InvalidInput(f"{path}:{number}: a TREC run line is 'qid Q0 docid rank score tag'")
            try:
                score = float(parts[4])
            except ValueError:
                raise InvalidInput(f"{path}:{number}: score {parts[4]!r} is not a number") from None
            yield number, parts[0], parts[2], score
