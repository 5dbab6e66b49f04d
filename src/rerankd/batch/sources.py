"""Streaming inputs of ``rerankd batch``: JSONL or Parquet files of pairs or of query x candidates groups.

A source is read twice, both times as a stream: :meth:`RecordSource.scan` checks every record once, counts the
pairs and notes a :data:`Cursor` at the start of every shard; :meth:`RecordSource.read` then reads one shard's
pairs from its cursor (a byte offset into a JSONL file, a row group of a Parquet file), so a resumed job or a Ray
worker starts at its shard without reading what comes before it.

Record layouts (detected from the first record):

- pairs: ``{"query": str, "document": str, "id"?: any, "query_id"?: any}`` (``text`` is accepted for
  ``document``); the default ``id`` is the pair's 0-based position.
- groups: ``{"query": str, "candidates": [str | {"text": str, "id"?: any}], "query_id"?: any}`` (``documents``
  is accepted for ``candidates``; ``id`` is accepted for ``query_id``); the default ``query_id`` is the group's
  0-based position and a candidate's default ``id`` its position in the group.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rerankd.errors import InvalidInput

Cursor = dict[str, Any]  # JSON-able: where a shard starts (source-specific)
Layout = Literal["pairs", "groups"]
IdKind = Literal["int", "str", "none"]
_DOC_KEYS = ("document", "text")
_GROUP_KEYS = ("candidates", "documents")


@dataclass(frozen=True, slots=True)
class PairRow:
    """One pair to score. ``id`` and ``query_id`` are the input's own identifiers, kept verbatim."""

    id: Any
    query: str
    document: str
    query_id: Any = None


@dataclass
class Scan:
    """What one checking pass over a source found."""

    total: int = 0
    cursors: list[Cursor] = field(default_factory=list)
    id_kind: IdKind = "none"
    query_id_kind: IdKind = "none"

    def note_ids(self, row_id: Any, query_id: Any) -> None:
        self.id_kind = _widen(self.id_kind, row_id)
        self.query_id_kind = _widen(self.query_id_kind, query_id)

    def to_json(self) -> dict[str, Any]:
        kinds = {"id_kind": self.id_kind, "query_id_kind": self.query_id_kind}
        return {"total": self.total, "cursors": self.cursors, **kinds}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scan:
        return cls(data["total"], list(data["cursors"]), data["id_kind"], data["query_id_kind"])


def _widen(kind: IdKind, value: Any) -> IdKind:
    if value is None:
        return kind
    if isinstance(value, int) and not isinstance(value, bool):
        return "int" if kind in ("none", "int") else "str"
    if isinstance(value, (str, int, float, bool)):
        return "str"
    raise InvalidInput(f"ids must be strings or numbers, got {type(value).__name__}")


def file_identity(path: Path) -> dict[str, Any]:
    """What tells a changed file from the one a job started on."""
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class RecordSource:
    """A JSONL or Parquet file of pair or group records."""

    def __init__(self, path: Path, layout: Layout | None = None) -> None:
        self.path = path
        self.parquet = path.suffix.lower() in (".parquet", ".pq")
        self.layout: Layout = layout or self._detect_layout()

    def identity(self) -> dict[str, Any]:
        return {"kind": "records", "layout": self.layout, "file": file_identity(self.path)}

    def start(self) -> Cursor:
        """The cursor of the first pair."""
        return {"position": None, "index": 0, "skip": 0}

    # ------------------------------------------------------------------ reading records
    def _records(self, position: list[int] | None = None) -> Iterator[tuple[list[int], dict[str, Any]]]:
        return self._parquet_records(position) if self.parquet else self._jsonl_records(position)

    def _jsonl_records(self, position: list[int] | None) -> Iterator[tuple[list[int], dict[str, Any]]]:
        offset = position[0] if position else 0
        with self.path.open("rb") as handle:
            handle.seek(offset)
            for line in handle:
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInput(f"{self.path} at byte {start}: not valid JSON ({exc.msg})") from exc
                if not isinstance(record, dict):
                    raise InvalidInput(f"{self.path} at byte {start}: each line must be a JSON object")
                yield [start, 0], record

    def _parquet_records(self, position: list[int] | None) -> Iterator[tuple[list[int], dict[str, Any]]]:
        parquet = _pyarrow_parquet()
        handle = parquet.ParquetFile(str(self.path))
        group, row = position if position else (0, 0)
        for index in range(group, handle.metadata.num_row_groups):
            records = handle.read_row_group(index).to_pylist()
            for number in range(row if index == group else 0, len(records)):
                yield [index, number], records[number]

    def _detect_layout(self) -> Layout:
        for _, record in self._records():
            return "groups" if any(isinstance(record.get(key), list) for key in _GROUP_KEYS) else "pairs"
        raise InvalidInput(f"{self.path} holds no records")

    # ------------------------------------------------------------------ records -> pairs
    def _expand(self, record: dict[str, Any], index: int, where: str) -> list[PairRow]:
        query = record.get("query")
        if not isinstance(query, str) or not query.strip():
            raise InvalidInput(f"{where}: needs a non-empty string 'query'")
        if self.layout == "pairs":
            document = _first(record, _DOC_KEYS)
            if not isinstance(document, str):
                raise InvalidInput(f"{where}: needs a string 'document' (or 'text')")
            return [PairRow(record.get("id", index), query, document, record.get("query_id"))]
        candidates = _first(record, _GROUP_KEYS)
        if not isinstance(candidates, list):
            raise InvalidInput(f"{where}: needs a list 'candidates' (or 'documents')")
        query_id = record.get("query_id", record.get("id", index))
        rows = []
        for number, candidate in enumerate(candidates):
            if isinstance(candidate, str):
                rows.append(PairRow(number, query, candidate, query_id))
                continue
            text = _first(candidate, _DOC_KEYS) if isinstance(candidate, dict) else None
            if not isinstance(text, str):
                raise InvalidInput(f"{where}: candidate {number} must be a string or an object with a 'text'")
            rows.append(PairRow(candidate.get("id", candidate.get("doc_id", number)), query, text, query_id))
        return rows

    def scan(self, shard_rows: int) -> Scan:
        """Check every record, count the pairs and note the cursor where each shard starts."""
        scan = Scan()
        for index, (position, record) in enumerate(self._records()):
            rows = self._expand(record, index, self._where(position))
            for skip, row in enumerate(rows):
                if (scan.total + skip) % shard_rows == 0:
                    scan.cursors.append({"position": position, "index": index, "skip": skip})
                scan.note_ids(row.id, row.query_id)
            scan.total += len(rows)
        if scan.total == 0:
            raise InvalidInput(f"{self.path} holds no pairs to score")
        return scan

    def read(self, cursor: Cursor, count: int) -> Iterator[PairRow]:
        """``count`` pairs from ``cursor`` on, in input order."""
        index, skip = cursor["index"], cursor["skip"]
        for position, record in self._records(cursor["position"]):
            for row in self._expand(record, index, self._where(position))[skip:]:
                if count <= 0:
                    return
                yield row
                count -= 1
            index, skip = index + 1, 0
            if count <= 0:
                return

    def _where(self, position: list[int]) -> str:
        if self.parquet:
            return f"{self.path} row group {position[0]} row {position[1]}"
        return f"{self.path} at byte {position[0]}"


def _first(record: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    return None


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as parquet
    except ImportError as exc:
        from rerankd.errors import MissingDependency

        raise MissingDependency("Parquet files need pyarrow: pip install 'rerankd[batch]'") from exc
    return parquet


def open_source(path: Path, layout: Layout | None = None) -> RecordSource:
    if not path.is_file():
        raise InvalidInput(f"no such input file: {path}")
    if os.path.getsize(path) == 0:
        raise InvalidInput(f"{path} is empty")
    return RecordSource(path, layout)
