"""`rerankd index` and `rerankd search` as the README shows them, offline, on the packaged MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from tests.pipeline.conftest import ROWS, write_jsonl


@pytest.fixture(scope="module")
def cli_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    corpus = write_jsonl(folder / "corpus.jsonl", ROWS)
    result = CliRunner().invoke(
        app, ["index", str(corpus), "--out", str(folder / "idx"), "--dense-model", "all-MiniLM-L6-v2", "--hnsw"]
    )
    assert result.exit_code == 0, result.output
    assert "generation 1, 10 documents (+10 added" in flat(result.output)
    return folder / "idx"


def flat(text: str) -> str:
    """Rich wraps long lines at the terminal width: compare with single spaces."""
    return " ".join(text.split())


def search(*args: str) -> dict:
    result = CliRunner().invoke(app, ["search", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("retriever", ["bm25", "dense", "hybrid"])
def test_search_each_retriever_then_rerank_with_minilm(cli_index: Path, retriever: str) -> None:
    body = search("what is a giant panda?", "--index", str(cli_index), "--model", "all-MiniLM-L6-v2",
                  "--retriever", retriever, "-k", "5", "--top-n", "3")  # fmt: skip
    assert body["retriever"] == retriever and body["model"] == "all-MiniLM-L6-v2"
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["id"] == "d01"
    assert results[0]["score"] == pytest.approx(results[0]["rerank_score"])
    assert results[0]["score"] > results[1]["score"] > results[2]["score"]
    assert set(body["timings_ms"]) == {"retrieve", "rerank", "total"}


def test_search_filter_and_first_stage_only(cli_index: Path) -> None:
    body = search("panda", "--index", str(cli_index), "--no-rerank", "--filter", '{"lang": "fr"}')
    assert [r["id"] for r in body["results"]] == ["d09"]
    assert body["results"][0]["metadata"] == {"lang": "fr", "year": 2019, "tags": ["animal"]}
    assert body["model"] is None


def test_index_reports_bad_rows_by_line_and_updates_incrementally(tmp_path: Path) -> None:
    runner = CliRunner()
    corpus = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "text": "alpha"}, {"text": "no id"}])
    failed = runner.invoke(app, ["index", str(corpus), "--out", str(tmp_path / "idx")])
    assert failed.exit_code != 0
    assert "c.jsonl:2: no id" in flat(failed.output)
    ok = runner.invoke(app, ["index", str(corpus), "--out", str(tmp_path / "idx"), "--skip-invalid"])
    assert ok.exit_code == 0, ok.output
    assert "skipped c.jsonl:2: no id" in flat(ok.output) and "1 documents" in flat(ok.output)
    (tmp_path / "gone.txt").write_text("a\nnever-there\n")
    more = write_jsonl(tmp_path / "more.jsonl", [{"id": "b", "text": "beta"}])
    updated = runner.invoke(app, ["index", str(more), "--out", str(tmp_path / "idx"), "--delete",
                                  str(tmp_path / "gone.txt")])  # fmt: skip
    assert updated.exit_code == 0, updated.output
    assert "generation 2, 1 documents (+1 added, 0 updated, 1 deleted" in flat(updated.output)
    assert "never-there" in flat(updated.output)
    body = search("beta", "--index", str(tmp_path / "idx"), "--no-rerank")
    assert [r["id"] for r in body["results"]] == ["b"]


def test_search_errors_are_one_line(tmp_path: Path, cli_index: Path) -> None:
    result = CliRunner().invoke(app, ["search", "x", "--index", str(tmp_path), "--no-rerank"])
    assert result.exit_code != 0 and "holds no search index" in flat(result.output)
    result = CliRunner().invoke(app, ["search", "x", "--index", str(cli_index), "--no-rerank", "--filter", "[1]"])
    assert result.exit_code != 0 and "--filter must be a JSON object" in flat(result.output)
