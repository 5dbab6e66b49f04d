"""The on-disk index: immutable generations behind one atomically replaced pointer, and the reader's view.

Layout of an index folder::

    DIR/CURRENT                     the live generation's folder name (replaced with os.replace: atomic)
    DIR/gen-000007/manifest.json    language, rows, chunks, dense settings
    DIR/gen-000007/lexical/         the tantivy index (BM25 over title + text, metadata as JSON, row numbers)
    DIR/gen-000007/docs-000003.*    documents of rows [start, start + rows): .jsonl, .offsets.npy, .ids.json
    DIR/gen-000007/vectors-000003.npy   their bi-encoder vectors (dense indexes)
    DIR/gen-000007/live.npy         which rows are live (an update or delete retires a row)
    DIR/gen-000007/hnsw.usearch     the HNSW graph over live rows (when built with HNSW)

A write builds generation N+1 beside N: files that never change (tantivy segments, document and vector chunks)
are hard-linked from N, new ones are written and fsynced, and only then is ``CURRENT`` switched. A crash before
the switch leaves N untouched and readable; the half-written folder is removed by the next write. A reader
(:class:`SearchIndex`) notices a new ``CURRENT`` on its next query and opens it, while queries already running
finish on the generation they started with; the two newest generations are kept.
"""

from __future__ import annotations

import bisect
import json
import mmap
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rerankd.errors import InvalidInput, NotReady
from rerankd.pipeline.analysis import build_analyzer, import_tantivy
from rerankd.pipeline.documents import Document

FORMAT = 1
POINTER = "CURRENT"
MANIFEST = "manifest.json"
LEXICAL = "lexical"


@dataclass(frozen=True)
class Chunk:
    """Rows ``[start, start + rows)``, written by one generation and never changed after."""

    name: str
    start: int
    rows: int

    def path(self, folder: Path, kind: str) -> Path:
        suffix = {"docs": ".jsonl", "offsets": ".offsets.npy", "ids": ".ids.json", "vectors": ".npy"}[kind]
        prefix = "vectors" if kind == "vectors" else "docs"
        return folder / f"{prefix}-{self.name}{suffix}"


@dataclass(frozen=True)
class DenseSettings:
    model: str
    dim: int
    hnsw: bool = False
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64


@dataclass(frozen=True)
class Manifest:
    generation: int
    language: str
    rows: int
    live: int
    chunks: tuple[Chunk, ...] = ()
    dense: DenseSettings | None = None
    format: int = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        body = {
            "format": self.format,
            "generation": self.generation,
            "language": self.language,
            "rows": self.rows,
            "live": self.live,
            "chunks": [vars(c) for c in self.chunks],
            "dense": vars(self.dense) if self.dense else None,
            **self.extra,
        }
        return json.dumps(body, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        known = {"format", "generation", "language", "rows", "live", "chunks", "dense"}
        if raw.get("format") != FORMAT:
            raise InvalidInput(f"index format {raw.get('format')!r} is not supported (this rerankd reads {FORMAT})")
        return cls(
            generation=int(raw["generation"]),
            language=raw["language"],
            rows=int(raw["rows"]),
            live=int(raw["live"]),
            chunks=tuple(Chunk(**c) for c in raw["chunks"]),
            dense=DenseSettings(**raw["dense"]) if raw.get("dense") else None,
            extra={k: v for k, v in raw.items() if k not in known},
        )


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


def current_generation(root: Path) -> str | None:
    """The live generation's folder name, or None when ``root`` holds no index yet."""
    try:
        name = (root / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def tantivy_schema() -> Any:
    tantivy = import_tantivy()
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("body", stored=False, tokenizer_name="rerankd_body", index_option="freq")
    builder.add_json_field("metadata", stored=False, fast=True, tokenizer_name="raw", index_option="basic")
    builder.add_unsigned_field("row", stored=False, indexed=False, fast=True)
    return builder.build()


def open_lexical(folder: Path, language: str) -> Any:
    """The tantivy index in ``folder`` (created if empty) with the language's analyzer registered."""
    tantivy = import_tantivy()
    folder.mkdir(parents=True, exist_ok=True)
    index = tantivy.Index(tantivy_schema(), path=str(folder), reuse=True)
    index.register_tokenizer("rerankd_body", build_analyzer(language))
    return index


class DocumentChunk:
    """Read-only, memory-mapped rows of one chunk."""

    def __init__(self, chunk: Chunk, folder: Path) -> None:
        self.chunk = chunk
        self.offsets = np.load(chunk.path(folder, "offsets"))
        with chunk.path(folder, "docs").open("rb") as handle:
            self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if chunk.rows else b""

    def document(self, row: int) -> Document:
        local = row - self.chunk.start
        return Document.from_json(self.data[int(self.offsets[local]) : int(self.offsets[local + 1])])


class Snapshot:
    """One generation, opened for reading. Everything it reads stays valid while it is referenced."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8"))
        self.index = open_lexical(folder / LEXICAL, self.manifest.language)
        self.schema = self.index.schema
        self.searcher = self.index.searcher()
        self.live = np.load(folder / "live.npy") if self.manifest.rows else np.zeros(0, dtype=bool)
        self.chunks = [DocumentChunk(chunk, folder) for chunk in self.manifest.chunks]
        self._starts = [chunk.start for chunk in self.manifest.chunks]
        self._vectors: np.ndarray | None = None
        self._hnsw: Any = None
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def document(self, row: int) -> Document:
        return self.chunks[bisect.bisect_right(self._starts, row) - 1].document(row)

    def documents(self, rows: list[int]) -> list[Document]:
        return [self.document(row) for row in rows]

    def rows_of(self, addresses: list[Any]) -> list[int]:
        return [int(row) for row in self.searcher.fast_field_values("row", addresses)]

    def vectors(self) -> np.ndarray:
        """All rows' vectors ``(rows, dim)``, float32 (loaded once, on the first dense query)."""
        if self.manifest.dense is None:
            raise InvalidInput(f"{self.folder.parent} has no vectors: build it with a dense model", param="retriever")
        with self._lock:
            if self._vectors is None:
                dim = self.manifest.dense.dim
                parts = [np.load(c.path(self.folder, "vectors"), mmap_mode="r") for c in self.manifest.chunks]
                self._vectors = np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, dim), "f4")
            return self._vectors

    def hnsw(self) -> Any:
        """The HNSW graph (memory-mapped view), or None when the index has none."""
        if self.manifest.dense is None or not self.manifest.dense.hnsw:
            return None
        with self._lock:
            if self._hnsw is None:
                from usearch.index import Index

                self._hnsw = Index.restore(str(self.folder / "hnsw.usearch"), view=True)
            return self._hnsw


class SearchIndex:
    """A search index folder as readers see it: always the newest committed generation.

    ``snapshot()`` is cheap (one ``stat`` of ``CURRENT``); when a writer has switched generations it opens the
    new one. A query holds on to the snapshot it started with, so an update never disturbs it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._snapshot: Snapshot | None = None
        self.snapshot()

    def _pointer_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = (self.root / POINTER).stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def snapshot(self) -> Snapshot:
        stamp = self._pointer_stamp()
        if self._snapshot is not None and stamp == self._stamp:
            return self._snapshot
        with self._lock:
            for _ in range(3):  # a generation can be collected between reading CURRENT and opening it
                stamp = self._pointer_stamp()
                name = current_generation(self.root)
                if name is None:
                    if self._snapshot is not None:
                        return self._snapshot
                    raise NotReady(f"{self.root} holds no search index (build one with `rerankd index`)")
                if self._snapshot is not None and self._snapshot.folder.name == name:
                    self._stamp = stamp
                    return self._snapshot
                try:
                    self._snapshot, self._stamp = Snapshot(self.root / name), stamp
                    return self._snapshot
                except FileNotFoundError:
                    continue
            raise NotReady(f"{self.root}: could not open the current generation; retry")

    @property
    def manifest(self) -> Manifest:
        return self.snapshot().manifest
