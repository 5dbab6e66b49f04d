"""Documents of a search index and the corpus files they come from (JSONL, Parquet, a BEIR folder).

A corpus row needs an id and a non-empty text; title and metadata are optional. Field names are configurable
(:class:`FieldMap`); by default ``id`` (or BEIR's ``_id``), ``title``, ``text``, and ``metadata`` (an object)
plus every other top-level field, which become filterable metadata. A row that lacks an id or a text, or
repeats an id, is a :class:`RowProblem` with its line number (JSONL) or row number (Parquet): the reader
collects them and the index builder refuses the corpus, listing them, unless told to skip (and report) them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerankd.errors import InvalidInput, MissingDependency

MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Document:
    """One searchable document. ``body`` (title and text) is what BM25, the bi-encoder and the reranker read."""

    id: str
    text: str
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "title": self.title, "text": self.text, "metadata": dict(self.metadata)},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, line: str | bytes) -> Document:
        item = json.loads(line)
        return cls(item["id"], item["text"], item.get("title", ""), item.get("metadata") or {})


@dataclass(frozen=True)
class FieldMap:
    """Which corpus fields hold the id, title and text. ``id=None`` accepts ``id`` or BEIR's ``_id``."""

    id: str | None = None
    title: str = "title"
    text: str = "text"
    metadata: str = "metadata"


@dataclass(frozen=True)
class RowProblem:
    """A corpus row that cannot be indexed: where it is (``path:line``) and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class InvalidCorpus(InvalidInput):
    """The corpus has rows without an id or a text (or duplicate ids); ``problems`` lists every one."""

    code = "invalid_corpus"

    def __init__(self, problems: list[RowProblem]) -> None:
        listed = "; ".join(str(p) for p in problems[:MAX_LISTED_PROBLEMS])
        more = f" (and {len(problems) - MAX_LISTED_PROBLEMS} more)" if len(problems) > MAX_LISTED_PROBLEMS else ""
        super().__init__(f"{len(problems)} corpus rows cannot be indexed: {listed}{more}", param="corpus")
        self.problems = problems


def _scalar_metadata(value: Any) -> bool:
    if isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)


def document_from_row(item: Mapping[str, Any], fields: FieldMap, where: str) -> Document | RowProblem:
    """A document from one parsed row, or the reason it cannot be one."""
    raw_id = item.get(fields.id) if fields.id is not None else item.get("id", item.get("_id"))
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        return RowProblem(where, f"no id (field {fields.id or 'id/_id'!r})")
    text = item.get(fields.text)
    if not isinstance(text, str) or not text.strip():
        return RowProblem(where, f"no text (field {fields.text!r}) for id {raw_id!r}")
    title = item.get(fields.title)
    known = {fields.id or "id", "_id", fields.title, fields.text, fields.metadata}
    metadata: dict[str, Any] = {}
    nested = item.get(fields.metadata)
    if isinstance(nested, Mapping):
        metadata.update({str(k): v for k, v in nested.items() if _scalar_metadata(v)})
    metadata.update({str(k): v for k, v in item.items() if k not in known and _scalar_metadata(v)})
    return Document(str(raw_id), text.strip(), str(title).strip() if isinstance(title, str) else "", metadata)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any] | None, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, None, f"not valid JSON ({exc.msg})"
                continue
            if not isinstance(item, dict):
                yield where, None, "not a JSON object"
                continue
            yield where, item, ""


def _parquet_rows(path: Path) -> Iterator[tuple[str, Mapping[str, Any] | None, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependency("reading Parquet needs pyarrow: pip install 'rerankd[search]'") from exc
    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for item in batch.to_pylist():
            number += 1
            yield f"{path.name}:row {number}", item, ""


def corpus_file(path: str | Path) -> Path:
    """The corpus file of ``path``: the file itself, or a BEIR folder's ``corpus.jsonl``."""
    source = Path(path)
    if source.is_dir():
        beir = source / "corpus.jsonl"
        if not beir.is_file():
            raise InvalidInput(f"{source} is a folder without corpus.jsonl (BEIR layout)", param="corpus")
        return beir
    if not source.is_file():
        raise InvalidInput(f"corpus {source} does not exist", param="corpus")
    return source


def read_corpus(path: str | Path, fields: FieldMap | None = None) -> Iterator[Document | RowProblem]:
    """Documents (and row problems, in file order) of a ``.jsonl``/``.json`` (one object per line) or
    ``.parquet`` file, or of a BEIR folder. Duplicate ids are problems too: the first row keeps its id."""
    source = corpus_file(path)
    fields = fields or FieldMap()
    rows = _parquet_rows(source) if source.suffix.lower() in (".parquet", ".pq") else _jsonl_rows(source)
    seen: dict[str, str] = {}
    for where, item, error in rows:
        if item is None:
            yield RowProblem(where, error)
            continue
        parsed = document_from_row(item, fields, where)
        if isinstance(parsed, Document):
            first = seen.setdefault(parsed.id, where)
            if first != where:
                yield RowProblem(where, f"duplicate id {parsed.id!r} (first at {first})")
                continue
        yield parsed
