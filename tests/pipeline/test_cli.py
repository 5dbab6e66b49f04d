"""`rerankd index` and `rerankd search` as the README shows them, offline, on the packaged MiniLM; `rerankd search`
over an Elasticsearch / OpenSearch stand-in (contract tests)."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rerankd.cli import app
from tests.pipeline.conftest import ROWS, write_jsonl
from tests.pipeline.engine_fixture import fake_engine, search_response


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


# ---------------------------------------------------------------------------------------------- a search cluster
# Contract tests: `rerankd search --first-stage elasticsearch|opensearch` against the local _search stand-in.
CLUSTER_HITS = search_response(
    [("d01", 7.5, {"headline": "Giant panda", "body": "The giant panda eats bamboo.", "lang": "en"}),
     ("d10", 3.0, {"headline": "Panda Express", "body": "Panda Express is a fast food restaurant chain.",
                   "lang": "en"})]
)  # fmt: skip


@pytest.mark.contract
@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_search_a_cluster_then_rerank(flavor: str, bert_ce: Path, tmp_path: Path) -> None:
    dsl = tmp_path / "query.json"
    dsl.write_text(json.dumps({"query": {"match": {"body": {"query": "{{query}}", "operator": "and"}}}}))
    with fake_engine(flavor) as engine:
        engine.answer(CLUSTER_HITS)
        body = search("giant panda", "--first-stage", flavor, "--first-stage-url", engine.url,
                      "--first-stage-index", "articles", "--first-stage-query", f"@{dsl}",
                      "--first-stage-fields", "title=headline,text=body", "--first-stage-timeout", "5",
                      "--filter", '{"lang": "en"}', "--model", str(bert_ce), "-k", "2")  # fmt: skip
        sent = engine.requests[-1]
    assert sent.path.split("?")[0] == "/articles/_search"
    assert sent.body == {"query": {"bool": {"must": [{"match": {"body": {"query": "giant panda", "operator": "and"}}}],
                                            "filter": [{"term": {"lang": "en"}}]}}, "size": 2}  # fmt: skip
    assert body["retriever"] == flavor and body["candidates"] == 2 and body["model"] == str(bert_ce)
    assert {r["id"] for r in body["results"]} == {"d01", "d10"}
    assert {r["id"]: r["first_stage_score"] for r in body["results"]} == {"d01": 7.5, "d10": 3.0}
    assert all(r["score"] == r["rerank_score"] for r in body["results"])
    assert body["results"][0]["score"] >= body["results"][1]["score"]


@pytest.mark.contract
def test_the_cluster_settings_come_from_env_vars_too() -> None:
    env = {"RERANKD_FIRST_STAGE": "opensearch", "RERANKD_FIRST_STAGE_INDEX": "articles",
           "RERANKD_FIRST_STAGE_AUTH": "admin:s3cret",
           "RERANKD_FIRST_STAGE_FIELDS": "title=headline,text=body"}  # fmt: skip
    with fake_engine("opensearch") as engine:
        engine.answer(CLUSTER_HITS)
        result = CliRunner().invoke(app, ["search", "panda", "--no-rerank", "--json"],
                                    env={**env, "RERANKD_FIRST_STAGE_URL": engine.url})  # fmt: skip
        sent = engine.requests[-1]
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in json.loads(result.output)["results"]] == ["d01", "d10"]
    assert sent.path.split("?")[0] == "/articles/_search"
    assert sent.headers["authorization"] == "Basic " + base64.b64encode(b"admin:s3cret").decode()


@pytest.mark.contract
@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_a_cluster_that_is_down_exits_4_with_one_line(flavor: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    result = CliRunner().invoke(app, ["search", "panda", "--no-rerank", "--first-stage", flavor,
                                      "--first-stage-url", closed, "--first-stage-index", "docs"])  # fmt: skip
    assert result.exit_code == 4, result.output
    assert "unavailable" in flat(result.output) and "retry later" in flat(result.output)
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--first-stage", "elasticsearch"], "needs --first-stage-url"),
        (["--first-stage", "solr"], "invalid --first-stage 'solr'"),
        (["--first-stage", "opensearch", "--first-stage-url", "http://127.0.0.1:1", "--first-stage-index", "d",
          "--first-stage-api-key", "k"], "--first-stage-api-key is Elasticsearch's"),
        (["--first-stage", "elasticsearch", "--first-stage-url", "http://127.0.0.1:1", "--first-stage-index", "d",
          "--retriever", "dense"], "--retriever picks a retriever over --index"),
        (["--first-stage", "elasticsearch", "--first-stage-url", "http://127.0.0.1:1", "--first-stage-index", "d",
          "--first-stage-query", '{"match": {"text": "fixed"}}'], "never uses {{query}}"),
    ],
)  # fmt: skip
def test_cluster_setting_errors_are_one_line_before_anything_connects(flags: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["search", "panda", "--no-rerank", *flags])
    assert result.exit_code == 2, result.output
    assert message in flat(result.output)
