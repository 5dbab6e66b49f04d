"""Corpus files: JSONL (BEIR's and plain), Parquet and BEIR folders; every bad row reported with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from rerankd.errors import InvalidInput
from rerankd.pipeline import Document, FieldMap, IndexWriter, InvalidCorpus, RowProblem, SearchIndex, read_corpus
from tests.pipeline.conftest import write_jsonl


def test_jsonl_rows_become_documents_with_metadata(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"_id": "a", "title": "T", "text": "alpha", "metadata": {"lang": "en"}, "year": 2001},
            {"id": 7, "text": "beta", "tags": ["x", "y"], "nested": {"dropped": True}},
        ],
    )
    first, second = list(read_corpus(path))
    assert first == Document("a", "alpha", "T", {"lang": "en", "year": 2001})
    assert first.body == "T alpha"
    assert second == Document("7", "beta", "", {"tags": ["x", "y"]})  # ids become strings; objects are not metadata


def test_bad_rows_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "corpus.jsonl",
        [
            {"id": "a", "text": "fine"},
            {"text": "no id"},
            "",
            "{not json",
            {"id": "b", "text": "  "},
            {"id": "a", "text": "x"},
        ],
    )
    items = list(read_corpus(path))
    problems = [str(item) for item in items if isinstance(item, RowProblem)]
    assert problems == [
        "corpus.jsonl:2: no id (field 'id/_id')",
        "corpus.jsonl:4: not valid JSON (Expecting property name enclosed in double quotes)",
        "corpus.jsonl:5: no text (field 'text') for id 'b'",
        "corpus.jsonl:6: duplicate id 'a' (first at corpus.jsonl:1)",
    ]
    with pytest.raises(InvalidCorpus) as caught, IndexWriter(tmp_path / "idx") as writer:
        writer.upsert(read_corpus(path))
    assert caught.value.problems[0].where == "corpus.jsonl:2"
    assert "4 corpus rows cannot be indexed: corpus.jsonl:2: no id" in caught.value.message
    assert not (tmp_path / "idx" / "CURRENT").exists()  # nothing was committed


def test_skip_invalid_indexes_the_good_rows_and_reports_the_bad(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "fine"}, {"title": "no id", "text": "x"}])
    with IndexWriter(tmp_path / "idx") as writer:
        writer.upsert(read_corpus(path), skip_invalid=True)
    assert [str(p) for p in writer.report.skipped] == ["c.jsonl:2: no id (field 'id/_id')"]
    assert (writer.report.added, writer.report.live) == (1, 1)
    assert SearchIndex(tmp_path / "idx").snapshot().document(0).id == "a"


def test_parquet_and_custom_field_names(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"doc": ["p1", None], "body": ["parquet text", "orphan"], "lang": ["de", "en"]})
    pq.write_table(table, tmp_path / "corpus.parquet")
    items = list(read_corpus(tmp_path / "corpus.parquet", FieldMap(id="doc", text="body")))
    assert items[0] == Document("p1", "parquet text", "", {"lang": "de"})
    assert str(items[1]) == "corpus.parquet:row 2: no id (field 'doc')"


def test_a_beir_folder_reads_its_corpus_jsonl(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "", "text": "x"}])
    assert [d.id for d in read_corpus(tmp_path) if isinstance(d, Document)] == ["d1"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"without corpus\.jsonl"):
        list(read_corpus(tmp_path / "empty"))
    with pytest.raises(InvalidInput, match="does not exist"):
        list(read_corpus(tmp_path / "nope.jsonl"))
