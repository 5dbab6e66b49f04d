"""The embedded index: BM25 with per-language analysis, metadata filters, incremental updates, atomic writes
(a crash mid-write leaves the previous generation readable) and readers that keep answering during updates."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rerankd.errors import InvalidInput, NotReady
from rerankd.pipeline import BM25Retriever, Document, IndexConfig, IndexWriter, SearchIndex
from rerankd.pipeline.analysis import analyze
from tests.pipeline.conftest import DOCUMENTS


def ids(candidates: list) -> list[str]:
    return [c.id for c in candidates]


def test_analyzers_lowercase_drop_stop_words_and_stem_per_language() -> None:
    assert analyze("english", "The Pandas are Eating") == ["panda", "eat"]  # Lucene's English stop list
    assert analyze("fr", "Les chevaux mangeaient") == ["cheval", "mang"]
    assert analyze("none", "The Pandas") == ["the", "pandas"]
    with pytest.raises(InvalidInput, match="unknown language 'klingon'"):
        analyze("klingon", "x")


def test_bm25_ranks_term_matches_and_stems_queries(bm25_index: Path) -> None:
    retriever = BM25Retriever(bm25_index)
    hits = retriever.retrieve("pandas eating bamboo", k=5)
    assert ids(hits)[0] == "d01"  # "panda", "eats" and "bamboo" after stemming
    assert set(ids(hits)) == {"d01", "d02", "d09", "d10"}  # only documents sharing a term
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert hits[0].score > hits[1].score > 0
    assert hits[0].document.title == "Giant panda" and hits[0].document.metadata["year"] == 2001
    assert retriever.retrieve("the of and", k=5) == []  # stop words only
    assert len(retriever.retrieve("panda", k=2)) == 2


def test_bm25_scores_follow_the_lucene_formula(bm25_index: Path) -> None:
    import math

    hits = {c.id: c.score for c in BM25Retriever(bm25_index).retrieve("coffee", k=10)}
    assert list(hits) == ["d08"]
    n, df = len(DOCUMENTS), 1
    idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
    lengths = [len(analyze("english", d.body)) for d in DOCUMENTS]
    tf, length = 3, lengths[7]  # "Coffee" title + "coffee" twice in the text
    expected = idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / (sum(lengths) / n)))
    assert hits["d08"] == pytest.approx(expected, rel=0.02)  # tantivy stores field norms with 1-byte precision


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"lang": "fr"}, {"d09"}),
        ({"lang": ["fr", "de"]}, {"d09"}),
        ({"lang": {"in": ["en"]}}, {"d01", "d02", "d10"}),
        ({"tags": "china"}, {"d01"}),  # list-valued metadata: any value matches
        ({"year": {"gte": 2010, "lt": 2019}}, {"d02", "d10"}),
        ({"year": {"gt": 2010}}, {"d02", "d09"}),
        ({"rating": {"lte": 3.5}}, {"d10"}),
        ({"lang": "en", "year": {"lte": 2001}}, {"d01"}),
        ({"lang": "EN"}, set()),  # exact, case-sensitive
    ],
)
def test_metadata_filters(bm25_index: Path, filters: dict, expected: set[str]) -> None:
    assert set(ids(BM25Retriever(bm25_index).retrieve("panda", k=10, filters=filters))) == expected


def test_bad_filters_and_arguments_are_typed_errors(bm25_index: Path) -> None:
    retriever = BM25Retriever(bm25_index)
    with pytest.raises(InvalidInput, match="unknown operator"):
        retriever.retrieve("panda", filters={"year": {"between": [1, 2]}})
    with pytest.raises(InvalidInput, match="range bounds must be numbers"):
        retriever.retrieve("panda", filters={"year": {"gte": "2001"}})
    with pytest.raises(InvalidInput, match="filter field"):
        retriever.retrieve("panda", filters={"a b": 1})
    with pytest.raises(InvalidInput, match="k must be"):
        retriever.retrieve("panda", k=0)
    with pytest.raises(InvalidInput, match="query"):
        retriever.retrieve("  ")
    with pytest.raises(NotReady, match="holds no search index"):
        SearchIndex(bm25_index.parent / "not-an-index")


def test_upsert_replaces_delete_removes_and_generations_advance(tmp_path: Path) -> None:
    with IndexWriter(tmp_path, IndexConfig()) as writer:
        writer.upsert(DOCUMENTS[:4])
    index = SearchIndex(tmp_path)
    retriever = BM25Retriever(index)
    assert ids(retriever.retrieve("paris", k=5)) == ["d03"]
    with IndexWriter(tmp_path) as writer:
        writer.upsert([Document("d03", "Marseille is a port city of France.", "Marseille"), DOCUMENTS[4]])
        writer.delete(["d01", "zz"])
    report = writer.report
    assert (report.added, report.updated, report.deleted, report.missing) == (1, 1, 1, ["zz"])
    assert (report.generation, report.rows, report.live) == (2, 6, 4)
    assert retriever.retrieve("paris", k=5) == []  # the old d03 is gone
    assert ids(retriever.retrieve("marseille", k=5)) == ["d03"]
    assert ids(retriever.retrieve("giant bamboo", k=5)) == []
    assert index.snapshot().generation == 2
    with pytest.raises(InvalidInput, match="rebuild to change them"):
        IndexWriter(tmp_path, IndexConfig(language="french")).open()
    with IndexWriter(tmp_path, IndexConfig(language="french"), rebuild=True) as writer:
        writer.upsert([Document("x", "Les chevaux mangeaient des pommes")])
    assert ids(retriever.retrieve("cheval", k=5)) == ["x"]
    assert retriever.retrieve("marseille", k=5) == []
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == ["gen-000002", "gen-000003"]  # current + previous


def test_an_exception_inside_the_write_leaves_the_previous_generation(tmp_path: Path) -> None:
    with IndexWriter(tmp_path) as writer:
        writer.upsert(DOCUMENTS[:2])
    with pytest.raises(RuntimeError, match="disk full"), IndexWriter(tmp_path) as writer:
        writer.upsert(DOCUMENTS[2:])
        raise RuntimeError("disk full")
    assert SearchIndex(tmp_path).manifest.live == 2
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == ["gen-000001"]


CRASHING_WRITER = """
import os, signal, sys
from rerankd.pipeline import Document, IndexWriter
writer = IndexWriter(sys.argv[1])
writer.open()
writer.upsert([Document(f"n{i}", f"new document number {i} about zebras") for i in range(500)])
writer.tantivy_writer.commit()  # the lexical part of the new generation is on disk, CURRENT not switched yet
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writer_leaves_the_previous_index_readable(tmp_path: Path) -> None:
    with IndexWriter(tmp_path) as writer:
        writer.upsert(DOCUMENTS)
    result = subprocess.run([sys.executable, "-c", CRASHING_WRITER, str(tmp_path)], capture_output=True, timeout=120)
    assert result.returncode == -9, result.stderr.decode()
    assert (tmp_path / "gen-000002").is_dir()  # the half-written generation is there ...
    retriever = BM25Retriever(tmp_path)
    assert retriever.retrieve("zebras", k=5) == []  # ... but readers never see it
    assert ids(retriever.retrieve("coffee", k=5)) == ["d08"]
    with IndexWriter(tmp_path) as writer:  # the next write removes it and commits normally
        writer.upsert([Document("z", "zebras only")])
    assert ids(retriever.retrieve("zebras", k=5)) == ["z"]
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == ["gen-000001", "gen-000002"]  # the wreck was replaced
    assert SearchIndex(tmp_path).manifest.live == len(DOCUMENTS) + 1


def test_readers_keep_answering_while_the_index_is_updated(tmp_path: Path) -> None:
    with IndexWriter(tmp_path) as writer:
        writer.upsert(DOCUMENTS)
    index = SearchIndex(tmp_path)
    held = index.snapshot()  # a query that started on generation 1
    retriever = BM25Retriever(index)
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def query_loop() -> None:
        while not stop.is_set():
            try:
                hits = retriever.retrieve("coffee", k=5)
                seen.add(len(hits))
                assert ids(hits)[:1] == ["d08"]
            except BaseException as exc:
                errors.append(exc)
                return

    thread = threading.Thread(target=query_loop)
    thread.start()
    try:
        for round_ in range(6):
            with IndexWriter(tmp_path) as writer:
                writer.upsert([Document(f"c{round_}", "instant coffee powder")])
    finally:
        stop.set()
        thread.join(timeout=60)
    assert errors == []
    assert index.snapshot().generation == 7
    assert len(BM25Retriever(index).retrieve("coffee", k=10)) == 7
    assert not (tmp_path / "gen-000001").exists()  # collected from disk ...
    assert held.document(7).id == "d08"  # ... yet the snapshot opened before still reads it
    assert os.path.exists(tmp_path / "CURRENT")
