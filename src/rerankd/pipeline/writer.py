"""Building and updating an index: one write transaction per call, committed atomically (see :mod:`.store`).

>>> with IndexWriter("idx", IndexConfig(language="english", dense_model="all-MiniLM-L6-v2")) as writer:
...     writer.upsert(documents)      # add, or replace documents with the same id
...     writer.delete(["d7"])
... # committed here; an exception inside the block leaves the previous generation as it was
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from rerankd.errors import InvalidInput
from rerankd.pipeline.analysis import canonical_language
from rerankd.pipeline.documents import Document, InvalidCorpus, RowProblem
from rerankd.pipeline.store import (
    LEXICAL,
    MANIFEST,
    POINTER,
    Chunk,
    DenseSettings,
    Manifest,
    current_generation,
    fsync_path,
    generation_name,
    open_lexical,
)

if TYPE_CHECKING:
    from rerankd.reranker import Reranker

logger = logging.getLogger(__name__)

EMBED_BATCH = 256
WRITER_HEAP = 128 * 1024 * 1024
Progress = Callable[[int], None]


@dataclass(frozen=True)
class IndexConfig:
    """Settings fixed when an index is created: the analyzer's language and the optional dense part."""

    language: str = "english"
    dense_model: str | None = None
    hnsw: bool = False
    connectivity: int = 16
    expansion_add: int = 128
    expansion_search: int = 64


@dataclass
class IndexReport:
    """What one write did."""

    path: Path
    generation: int = 0
    added: int = 0
    updated: int = 0
    deleted: int = 0
    missing: list[str] = field(default_factory=list)  # ids asked to be deleted that were not there
    skipped: list[RowProblem] = field(default_factory=list)
    rows: int = 0
    live: int = 0
    seconds: float = 0.0


def _link_tree(source: Path, target: Path) -> None:
    """Hard-link every file of ``source`` into ``target`` (tantivy's lock files excepted)."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(".lock"):
            os.link(item, target / item.name)


class IndexWriter:
    """One write transaction on the index folder ``root`` (created if absent). Only one writer at a time."""

    def __init__(
        self,
        root: str | Path,
        config: IndexConfig | None = None,
        *,
        rebuild: bool = False,
        encoder: Reranker | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.root = Path(root)
        self.requested = config
        self.rebuild = rebuild
        self.encoder = encoder
        self.progress = progress
        self.report = IndexReport(self.root)
        self._lock_handle: Any = None
        self._started = 0.0

    # ------------------------------------------------------------------ transaction
    def __enter__(self) -> IndexWriter:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

    def open(self) -> None:
        self._started = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_handle = (self.root / ".write.lock").open("w")
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_handle.close()
            raise InvalidInput(f"another writer is updating {self.root}; try again when it is done") from None
        previous_name = None if self.rebuild else current_generation(self.root)
        self._collect_garbage()
        previous_manifest = (self.root / previous_name / MANIFEST) if previous_name else None
        self.previous = Manifest.from_json(previous_manifest.read_text()) if previous_manifest else None
        self.previous_folder = self.root / previous_name if previous_name else None
        self.settings = self._settings()
        number = max([*self._generations(), 0]) + 1
        self.folder = self.root / generation_name(number)
        self.folder.mkdir()
        self.chunk = Chunk(f"{number:06d}", self.previous.rows if self.previous else 0, 0)
        if self.previous and previous_name:
            self._link_previous(self.root / previous_name)
            self.live = list(np.load(self.root / previous_name / "live.npy")) if self.previous.rows else []
            self.rows_by_id = self._live_ids(self.root / previous_name)
        else:
            self.live, self.rows_by_id = [], {}
        self.lexical = open_lexical(self.folder / LEXICAL, self.settings.language)
        self.tantivy_writer = self.lexical.writer(heap_size=WRITER_HEAP, num_threads=1)
        self._docs = self.chunk.path(self.folder, "docs").open("wb")
        self._offsets: list[int] = [0]
        self._ids: list[str] = []
        self._pending: list[Document] = []
        self._vectors: list[np.ndarray] = []
        self._retired: list[int] = []

    def _settings(self) -> Manifest:
        config = self.requested
        if self.previous is not None:
            if config is not None:
                self._check_compatible(config, self.previous)
            return self.previous
        config = config or IndexConfig()
        dense = None
        if config.dense_model:
            encoder = self._encoder(config.dense_model)
            dim = int(encoder.embed(["dimension probe"]).shape[1])
            dense = DenseSettings(config.dense_model, dim, config.hnsw, config.connectivity, config.expansion_add,
                                  config.expansion_search)  # fmt: skip
        return Manifest(0, canonical_language(config.language), 0, 0, (), dense)

    def _check_compatible(self, config: IndexConfig, previous: Manifest) -> None:
        language = canonical_language(config.language)
        model = previous.dense.model if previous.dense else None
        if language != previous.language or (config.dense_model or None) != model:
            raise InvalidInput(
                f"{self.root} was built with language={previous.language}, dense model={model}; "
                f"asked for language={language}, dense model={config.dense_model}: rebuild to change them",
                param="config",
            )

    def _encoder(self, model: str) -> Reranker:
        if self.encoder is None:
            from rerankd.reranker import Reranker

            self.encoder = Reranker.from_pretrained(model)
        if not self.encoder.is_embedder:
            raise InvalidInput(f"{model} is a {self.encoder.info.family}; dense retrieval needs a bi-encoder model")
        return self.encoder

    def _link_previous(self, previous: Path) -> None:
        _link_tree(previous / LEXICAL, self.folder / LEXICAL)
        for chunk in self.previous.chunks if self.previous else ():
            for kind in ("docs", "offsets", "ids", "vectors"):
                source = chunk.path(previous, kind)
                if source.exists():
                    os.link(source, chunk.path(self.folder, kind))

    def _live_ids(self, previous: Path) -> dict[str, int]:
        import json

        rows: dict[str, int] = {}
        for chunk in self.previous.chunks if self.previous else ():
            ids = json.loads(chunk.path(previous, "ids").read_text(encoding="utf-8"))
            for offset, doc_id in enumerate(ids):
                if self.live[chunk.start + offset]:
                    rows[doc_id] = chunk.start + offset
        return rows

    # ------------------------------------------------------------------ changes
    def upsert(self, documents: Iterable[Document | RowProblem], *, skip_invalid: bool = False) -> None:
        """Add documents; a document whose id is already live replaces it. Row problems abort the write
        (every one listed), or are skipped and reported in :attr:`report` with ``skip_invalid``."""
        problems: list[RowProblem] = []
        for item in documents:
            if isinstance(item, RowProblem):
                problems.append(item)
                continue
            if problems and not skip_invalid:
                continue  # keep reading to report every problem, write nothing more
            self._add(item)
        if problems and not skip_invalid:
            raise InvalidCorpus(problems)
        self.report.skipped.extend(problems)
        self._flush_vectors()

    def delete(self, ids: Iterable[str]) -> None:
        for doc_id in ids:
            row = self.rows_by_id.pop(doc_id, None)
            if row is None:
                self.report.missing.append(doc_id)
                continue
            self._retire(doc_id, row)
            self.report.deleted += 1

    def _retire(self, doc_id: str, row: int) -> None:
        self.live[row] = False
        self._retired.append(row)
        self.tantivy_writer.delete_documents_by_term("id", doc_id)

    def _add(self, document: Document) -> None:
        import tantivy

        previous_row = self.rows_by_id.get(document.id)
        if previous_row is not None:
            self._retire(document.id, previous_row)
            self.report.updated += 1
        else:
            self.report.added += 1
        row = self.chunk.start + len(self._ids)
        entry = tantivy.Document()
        entry.add_text("id", document.id)
        entry.add_text("body", document.body)
        entry.add_json("metadata", dict(document.metadata))
        entry.add_unsigned("row", row)
        self.tantivy_writer.add_document(entry)
        line = document.to_json().encode("utf-8") + b"\n"
        self._docs.write(line)
        self._offsets.append(self._offsets[-1] + len(line))
        self._ids.append(document.id)
        self.live.append(True)
        self.rows_by_id[document.id] = row
        if self.settings.dense is not None:
            self._pending.append(document)
            if len(self._pending) >= EMBED_BATCH:
                self._flush_vectors()
        elif self.progress and len(self._ids) % EMBED_BATCH == 0:
            self.progress(EMBED_BATCH)

    def _flush_vectors(self) -> None:
        if not self._pending or self.settings.dense is None:
            return
        encoder = self._encoder(self.settings.dense.model)
        vectors = encoder.embed([d.body for d in self._pending], role="document").astype(np.float32)
        self._vectors.append(vectors)
        if self.progress:
            self.progress(len(self._pending))
        self._pending = []

    # ------------------------------------------------------------------ commit / abort
    def commit(self) -> IndexReport:
        """Write the new generation, fsync it, switch ``CURRENT`` to it and drop old generations."""
        self._flush_vectors()
        self.tantivy_writer.commit()
        self.tantivy_writer.wait_merging_threads()
        self._docs.close()
        chunk = Chunk(self.chunk.name, self.chunk.start, len(self._ids))
        chunks = (self.previous.chunks if self.previous else ()) + ((chunk,) if chunk.rows else ())
        if chunk.rows:
            self._write_chunk(chunk)
        else:
            chunk.path(self.folder, "docs").unlink()
        live = np.asarray(self.live, dtype=bool)
        np.save(self.folder / "live.npy", live)
        if self.settings.dense is not None and self.settings.dense.hnsw:
            self._write_hnsw(chunk, live)
        number = int(self.folder.name.split("-")[1])
        manifest = Manifest(number, self.settings.language, len(live), int(live.sum()), chunks, self.settings.dense)
        (self.folder / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
        for item in self.folder.iterdir():
            if item.is_file():
                fsync_path(item)
        fsync_path(self.folder)
        self._switch(self.folder.name)
        self._collect_garbage()
        self._release()
        self.report.generation, self.report.rows, self.report.live = number, manifest.rows, manifest.live
        self.report.seconds = time.perf_counter() - self._started
        return self.report

    def abort(self) -> None:
        """Drop the generation being written; the previous one stays current."""
        with contextlib.suppress(Exception):
            self.tantivy_writer.rollback()
        with contextlib.suppress(Exception):
            self._docs.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        self._release()

    def _write_chunk(self, chunk: Chunk) -> None:
        import json

        np.save(chunk.path(self.folder, "offsets"), np.asarray(self._offsets, dtype=np.int64))
        chunk.path(self.folder, "ids").write_text(json.dumps(self._ids, ensure_ascii=False), encoding="utf-8")
        if self.settings.dense is not None:
            dim = self.settings.dense.dim
            vectors = np.concatenate(self._vectors) if self._vectors else np.zeros((0, dim), np.float32)
            np.save(chunk.path(self.folder, "vectors"), vectors)

    def _write_hnsw(self, chunk: Chunk, live: np.ndarray) -> None:
        from usearch.index import Index

        dense = self.settings.dense
        assert dense is not None
        graph: Any
        graph_file = self.previous_folder / "hnsw.usearch" if self.previous_folder is not None else None
        if graph_file is not None and graph_file.exists():
            graph = Index.restore(str(graph_file))
            retired = [row for row in self._retired if row < chunk.start]
            if retired:
                graph.remove(np.asarray(retired, dtype=np.uint64))
            new_rows = np.arange(chunk.start, chunk.start + chunk.rows)
            vectors = np.load(chunk.path(self.folder, "vectors")) if chunk.rows else None
        else:
            graph = Index(ndim=dense.dim, metric="ip", dtype="f32", connectivity=dense.connectivity,
                          expansion_add=dense.expansion_add, expansion_search=dense.expansion_search)  # fmt: skip
            parts = [np.load(c.path(self.folder, "vectors")) for c in self._chunks_with(chunk)]
            vectors = np.concatenate(parts) if parts else None
            new_rows = np.arange(len(live))
        if vectors is not None and len(vectors):
            keep = live[new_rows]
            graph.add(new_rows[keep].astype(np.uint64), vectors[keep])
        graph.save(str(self.folder / "hnsw.usearch"))

    def _chunks_with(self, chunk: Chunk) -> tuple[Chunk, ...]:
        return (self.previous.chunks if self.previous else ()) + ((chunk,) if chunk.rows else ())

    def _switch(self, name: str) -> None:
        temporary = self.root / f"{POINTER}.tmp"
        temporary.write_text(name + "\n", encoding="utf-8")
        fsync_path(temporary)
        os.replace(temporary, self.root / POINTER)
        fsync_path(self.root)

    # ------------------------------------------------------------------ housekeeping
    def _generations(self) -> list[int]:
        return [int(p.name.split("-")[1]) for p in self.root.glob("gen-*") if p.name.split("-")[1].isdigit()]

    def _collect_garbage(self) -> None:
        """Remove half-written generations (newer than CURRENT) and all but the current and previous ones."""
        name = current_generation(self.root)
        current = int(name.split("-")[1]) if name else 0
        committed = sorted(n for n in self._generations() if n <= current)
        keep = set(committed[-2:])
        building = getattr(self, "folder", None)
        for number in self._generations():
            folder = self.root / generation_name(number)
            if number not in keep and folder != building:
                shutil.rmtree(folder, ignore_errors=True)

    def _release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None
