"""The first stage settings configure (``--first-stage*`` / ``RERANKD_FIRST_STAGE*``): parsing, checks, and the real
`rerankd serve --first-stage elasticsearch` process answering POST /v1/search from the local _search stand-in,
through a cluster outage and back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rerankd.errors import InvalidInput
from rerankd.pipeline.first_stage import basic_auth, cluster_retriever, field_mapping, query_dsl
from rerankd.pipeline.remote import ElasticsearchRetriever, FieldMapping, OpenSearchRetriever
from rerankd.settings import Settings
from tests.pipeline.engine_fixture import fake_engine, search_response
from tests.server.conftest import free_port


def test_field_mapping() -> None:
    assert field_mapping("") == FieldMapping()
    assert field_mapping(" id=doc.id , title=headline,text=body,metadata=meta,filter_prefix=meta. ") == FieldMapping(
        id="doc.id", title="headline", text="body", metadata="meta", filter_prefix="meta."
    )
    assert field_mapping("id=_id,title=") == FieldMapping(id=None, title=None)
    for bad in ("body", "txt=body", "text="):
        with pytest.raises(InvalidInput, match="--first-stage-fields"):
            field_mapping(bad)


def test_query_dsl(tmp_path: Path) -> None:
    clause = {"match": {"text": "{{query}}"}}
    assert query_dsl(None) is None and query_dsl("  ") is None
    assert query_dsl('{"match": {"text": "{{query}}"}}') == clause
    assert query_dsl('{"query": {"match": {"text": "{{query}}"}}}') == clause  # a whole search body's query
    (tmp_path / "q.json").write_text('{"match": {"text": "{{query}}"}}')
    assert query_dsl(f"@{tmp_path / 'q.json'}") == clause
    for bad, message in [("{", "not valid JSON"), ("[1]", "JSON object"), ('{"match_all": {}}', "never uses"),
                         (f"@{tmp_path / 'nope.json'}", "no such file")]:  # fmt: skip
        with pytest.raises(InvalidInput, match=message):
            query_dsl(bad)


def test_basic_auth() -> None:
    assert basic_auth(None) is None
    assert basic_auth("elastic:pass:with:colons") == ("elastic", "pass:with:colons")
    with pytest.raises(InvalidInput, match="user:password"):
        basic_auth("elastic")


def test_settings_build_the_cluster_retriever(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cluster_retriever(Settings()) is None  # the default: the embedded index
    monkeypatch.setenv("RERANKD_FIRST_STAGE", "elasticsearch")
    monkeypatch.setenv("RERANKD_FIRST_STAGE_URL", "http://a:9200, http://b:9200")
    monkeypatch.setenv("RERANKD_FIRST_STAGE_INDEX", "articles")
    monkeypatch.setenv("RERANKD_FIRST_STAGE_FIELDS", "title=headline,text=body")
    monkeypatch.setenv("RERANKD_FIRST_STAGE_TIMEOUT_S", "2.5")
    settings = Settings()
    assert settings.first_stage_url == ("http://a:9200", "http://b:9200")
    retriever = cluster_retriever(settings)
    assert isinstance(retriever, ElasticsearchRetriever)
    assert (retriever.index, retriever.timeout_s) == ("articles", 2.5)
    assert retriever.fields == FieldMapping(title="headline", text="body")
    opensearch = cluster_retriever(settings.with_overrides(first_stage="opensearch"))
    assert isinstance(opensearch, OpenSearchRetriever)
    with pytest.raises(InvalidInput, match="needs --first-stage-url"):
        cluster_retriever(settings.model_copy(update={"first_stage_index": None}))


def test_secrets_stay_out_of_the_settings_repr() -> None:
    settings = Settings(first_stage_api_key="es-key-123", first_stage_auth="elastic:hunter2")
    assert "es-key-123" not in repr(settings) and "hunter2" not in repr(settings)


def test_serve_has_the_first_stage_options() -> None:
    from typer.testing import CliRunner

    from rerankd.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    for flag in ("--first-stage ", "--first-stage-url", "--first-stage-index", "--first-stage-query",
                 "--first-stage-fields", "--first-stage-api-key", "--first-stage-auth", "--first-stage-ca-certs",
                 "--no-first-stage-verify-certs", "--first-stage-timeout"):  # fmt: skip
        assert flag in result.output, flag


# ---------------------------------------------------------------------------------------------- `rerankd serve`
HITS = search_response(
    [("d01", 7.5, {"title": "Giant panda", "text": "The giant panda eats bamboo."}),
     ("d02", 3.0, {"title": "Red panda", "text": "The red panda is small."})]
)  # fmt: skip


def _serve(bert_ce: Path, engine_url: str) -> tuple[str, subprocess.Popen[str]]:
    port = free_port()
    exe = Path(sys.executable).with_name("rerankd")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RERANKD_FIRST_STAGE_API_KEY": "c2VjcmV0"}
    command = [str(exe), "serve", "--model", f"tiny={bert_ce}", "--port", str(port), "--cache", "none",
               "--device", "cpu", "--first-stage", "elasticsearch", "--first-stage-url", engine_url,
               "--first-stage-index", "docs", "--first-stage-timeout", "3"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else "exited"
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "rerankd serve never became ready"
        time.sleep(0.1)


@pytest.mark.contract
@pytest.mark.timeout(180)
def test_serve_first_stage_elasticsearch_through_an_outage(bert_ce: Path) -> None:
    """The real process, configured by flags and an env var: /v1/search retrieves from the cluster; while the
    cluster is down each search is a 503 first_stage_unavailable and everything else keeps working; once it is back,
    searches succeed again without a restart."""
    search = {"query": "panda", "k": 2, "model": "tiny"}
    with fake_engine("elasticsearch") as engine:
        port = int(engine.url.rsplit(":", 1)[1])
        engine.answer(HITS)
        url, process = _serve(bert_ce, engine.url)
    try:
        with fake_engine("elasticsearch", port=port) as engine:  # the same cluster address, up
            engine.answer(HITS)
            up = httpx.post(f"{url}/v1/search", json=search, timeout=30)
            sent = engine.requests[-1]
        down = httpx.post(f"{url}/v1/search", json=search, timeout=30)  # nothing listens there now
        rerank = httpx.post(f"{url}/v1/rerank", json={"model": "tiny", "query": "q", "documents": ["d"]}, timeout=30)
        with fake_engine("elasticsearch", port=port) as engine:  # back
            engine.answer(HITS)
            back = httpx.post(f"{url}/v1/search", json=search, timeout=30)
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert up.status_code == 200, up.text
    assert up.json()["retriever"] == "elasticsearch" and {r["id"] for r in up.json()["results"]} == {"d01", "d02"}
    assert up.headers["x-rerankd-model"] == "tiny" and up.headers["x-rerankd-response-id"] == up.json()["id"]
    assert sent.path.split("?")[0] == "/docs/_search" and sent.headers["authorization"] == "ApiKey c2VjcmV0"
    assert down.status_code == 503 and down.json()["error"]["code"] == "first_stage_unavailable"
    assert rerank.status_code == 200
    assert back.status_code == 200 and back.json()["candidates"] == 2


def test_server_shutdown_closes_the_cluster_client_and_search_threads(bert_ce: Path) -> None:
    pytest.importorskip("elasticsearch", reason="needs the elasticsearch extra: pip install 'rerankd[elasticsearch]'")
    import asyncio

    from rerankd import Reranker
    from rerankd.server import create_app

    settings = Settings(first_stage="elasticsearch", first_stage_url=("http://127.0.0.1:9",),
                        first_stage_index="docs", cache="none")  # fmt: skip
    tiny = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    app = create_app(settings, rerankers={"tiny": tiny})
    state = app.state.search
    closed: list[bool] = []
    real_close = state.cluster.client.close
    state.cluster.client.close = lambda: (closed.append(True), real_close())

    async def serve_and_stop() -> None:
        async with app.router.lifespan_context(app):
            assert not closed
            assert await state.run(lambda: 42) == 42  # the search threads work while the server runs

    asyncio.run(serve_and_stop())
    assert closed == [True]
    with pytest.raises(RuntimeError, match="shutdown"):
        state._pool.submit(print)  # no search threads are left behind
