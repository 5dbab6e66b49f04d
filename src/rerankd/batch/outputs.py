"""Shard files and the final output of ``rerankd batch``: JSONL, Parquet or a TREC run file.

Every row keeps the input's ``id`` (and ``query_id`` where the input has one) and gains ``score``. Each file is
written under a temporary name, flushed to disk and renamed, so a reader (or a restarted job) sees a whole
shard or none. JSONL keeps ids verbatim; Parquet types an id column ``int64`` when every id is an integer and
``string`` otherwise. A TREC run ranks each query's rows by descending score (ties in input order) and needs
each query's rows together, as BEIR-run and group inputs always have them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

from rerankd.batch.sources import IdKind, PairRow, Scan, _pyarrow_parquet
from rerankd.errors import InvalidInput

Format = Literal["jsonl", "parquet", "trec"]
SUFFIXES: dict[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".trec": "trec",
    ".run": "trec",
    ".txt": "trec",
}


def format_of(output: Path, given: str | None = None) -> Format:
    """The output format: ``given``, else from the output's suffix."""
    if given is not None:
        if given not in ("jsonl", "parquet", "trec"):
            raise InvalidInput(f"unknown output format {given!r}: jsonl, parquet or trec")
        return given  # type: ignore[return-value]
    fmt = SUFFIXES.get(output.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"cannot tell the format of {output.name}: use .jsonl, .parquet or .trec, or --format")
    return fmt


def shard_suffix(fmt: Format) -> str:
    return ".parquet" if fmt == "parquet" else ".jsonl"


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """A file that appears at ``path`` whole (flushed to disk, then renamed) or not at all."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_shard(path: Path, fmt: Format, rows: Sequence[PairRow], scores: Sequence[float], scan: Scan) -> None:
    """One shard's rows with their scores, atomically."""
    if len(rows) != len(scores):
        raise ValueError(f"{len(rows)} rows but {len(scores)} scores")
    with_query = scan.query_id_kind != "none"
    with atomic_file(path) as handle:
        if fmt == "parquet":
            _pyarrow_parquet().write_table(_table(rows, scores, scan), handle)
            return
        for row, score in zip(rows, scores, strict=True):
            record: dict[str, Any] = {"id": row.id}
            if with_query:
                record["query_id"] = row.query_id
            record["score"] = score
            handle.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")


def _table(rows: Sequence[PairRow], scores: Sequence[float], scan: Scan) -> Any:
    import pyarrow as pa

    columns = {"id": _typed(pa, [row.id for row in rows], scan.id_kind)}
    if scan.query_id_kind != "none":
        columns["query_id"] = _typed(pa, [row.query_id for row in rows], scan.query_id_kind)
    columns["score"] = pa.array(scores, type=pa.float64())
    return pa.table(columns)


def _typed(pa: Any, values: list[Any], kind: IdKind) -> Any:
    if kind == "int":
        return pa.array(values, type=pa.int64())
    return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values], pa.string())


def merge_shards(shards: Sequence[Path], output: Path, fmt: Format, tag: str = "rerankd") -> None:
    """Concatenate the shards, in order, into ``output`` (atomically); streaming, one shard in memory at a time."""
    with atomic_file(output) as handle:
        if fmt == "jsonl":
            for shard in shards:
                with shard.open("rb") as part:
                    while chunk := part.read(1 << 20):
                        handle.write(chunk)
        elif fmt == "parquet":
            _merge_parquet(shards, handle)
        else:
            _write_trec(_jsonl_rows(shards), handle, tag)


def _merge_parquet(shards: Sequence[Path], handle: IO[bytes]) -> None:
    parquet = _pyarrow_parquet()
    writer = None
    try:
        for shard in shards:
            table = parquet.read_table(str(shard))
            if writer is None:
                writer = parquet.ParquetWriter(handle, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _jsonl_rows(shards: Sequence[Path]) -> Iterator[dict[str, Any]]:
    for shard in shards:
        with shard.open(encoding="utf-8") as part:
            for line in part:
                yield json.loads(line)


def _write_trec(rows: Iterator[dict[str, Any]], handle: IO[bytes], tag: str) -> None:
    closed: set[str] = set()
    current: str | None = None
    group: list[tuple[str, float]] = []

    def flush() -> None:
        ranked = sorted(range(len(group)), key=lambda i: -group[i][1])
        for rank, i in enumerate(ranked, start=1):
            docid, score = group[i]
            handle.write(f"{current} Q0 {docid} {rank} {score!r} {tag}\n".encode())

    for row in rows:
        if row.get("query_id") is None:
            raise InvalidInput("a TREC run needs a query id per row: use a BEIR folder + run, groups, or 'query_id'")
        qid = str(row["query_id"])
        if qid != current:
            if current is not None:
                flush()
                closed.add(current)
            if qid in closed:
                raise InvalidInput(f"a TREC run needs each query's rows together; query {qid!r} comes back later")
            current, group = qid, []
        group.append((str(row["id"]), float(row["score"])))
    if current is not None:
        flush()
