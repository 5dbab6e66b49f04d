"""POST /v1/search on a real server (uvicorn on 127.0.0.1, httpx): retrieval over the served index, reranking
through the rerank routes' path (the same scores /v1/rerank gives, the score cache, A/B arms, shadows, feedback),
typed errors, live updates."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rerankd.pipeline import BM25Retriever, Document, IndexWriter, make_retriever
from rerankd.pipeline.http import SearchResponse
from rerankd.settings import Settings
from tests.pipeline.conftest import ROWS
from tests.pipeline.engine_fixture import CLUSTER_BLOCK, fake_engine, search_response
from tests.server.conftest import RunningServer, serve

if TYPE_CHECKING:
    from rerankd import Reranker


@pytest.fixture(scope="module")
def tiny_ce(bert_ce: Path) -> Reranker:
    from rerankd import Reranker

    return Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def search_server(dense_index: Path, tiny_ce: Reranker, encoder: Reranker) -> Iterator[RunningServer]:
    settings = Settings(cache="memory", index=str(dense_index), routes=("ab=tiny:50,minilm:50",),
                        admin_key=("admin-key",))  # fmt: skip
    with serve(settings, {"tiny": tiny_ce, "minilm": encoder}) as running:
        yield running


def post(server: RunningServer, **body: object) -> dict:
    response = server.client().post("/v1/search", json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    SearchResponse.model_validate(payload)  # the documented schema, nothing more
    return payload


def test_search_reranks_bm25_candidates_through_the_engine(search_server: RunningServer, dense_index: Path) -> None:
    body = post(search_server, query="panda", k=4, top_n=3, model="tiny")
    candidates = BM25Retriever(dense_index).retrieve("panda", k=4)
    assert body["candidates"] == 4 and body["model"] == "tiny" and body["retriever"] == "bm25"
    rerank = search_server.client().post(
        "/v1/rerank", json={"model": "tiny", "query": "panda", "documents": [c.document.body for c in candidates]}
    )
    expected = {candidates[r["index"]].id: r["relevance_score"] for r in rerank.json()["results"]}
    results = body["results"]
    assert [r["id"] for r in results] == list(expected)[:3]
    assert [r["score"] for r in results] == pytest.approx([expected[r["id"]] for r in results], abs=1e-6)
    first = {c.id: c for c in candidates}
    assert all(r["first_stage_score"] == pytest.approx(first[r["id"]].score, rel=1e-6) for r in results)
    assert all(r["first_stage_rank"] == first[r["id"]].rank for r in results)
    assert results[0]["title"] and results[0]["text"] and "lang" in results[0]["metadata"]
    timings = body["timings"]
    assert timings["total_ms"] >= timings["retrieve_ms"] > 0 and timings["rerank_ms"] > 0


def test_repeated_search_hits_the_score_cache(search_server: RunningServer) -> None:
    before = search_server.metric("rerankd_cache_hits_total", model="tiny")
    first = post(search_server, query="capital city", k=5, model="tiny")
    second = post(search_server, query="capital city", k=5, model="tiny")
    assert second["results"] == first["results"]
    hits = search_server.metric("rerankd_cache_hits_total", model="tiny") - before
    assert hits == first["candidates"] == 3  # d03, d04, d05 share "capital" or "city"


@pytest.mark.parametrize("retriever", ["dense", "hybrid"])
def test_dense_and_hybrid_with_filters(search_server: RunningServer, retriever: str) -> None:
    body = post(search_server, query="an animal from the mountains", retriever=retriever, k=10, top_n=5,
                model="minilm", filters={"tags": "animal"})  # fmt: skip
    assert {r["id"] for r in body["results"]} == {"d01", "d02", "d09"}
    assert body["results"][0]["score"] >= body["results"][-1]["score"]
    only = post(search_server, query="panda", retriever=retriever, rerank=False, top_n=2, return_text=False)
    assert only["model"] is None and len(only["results"]) == 2
    assert all(r["text"] is None and r["rerank_score"] is None for r in only["results"])


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"query": "panda", "filters": {"year": {"between": 1}}}, 400, "invalid_input"),
        ({"query": "panda", "model": "nope"}, 404, "model_not_found"),
        ({"query": "panda", "retriever": "splade"}, 422, "invalid_request"),
        ({"query": "panda", "k": 0}, 422, "invalid_request"),
        ({"query": "panda", "unknown": 1}, 422, "invalid_request"),
    ],
)
def test_search_errors(search_server: RunningServer, body: dict, status: int, code: str) -> None:
    response = search_server.client().post("/v1/search", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_an_empty_index_folder_is_503_until_an_index_is_committed(tmp_path: Path, tiny_ce: Reranker) -> None:
    with serve(Settings(cache="none", index=str(tmp_path)), {"tiny": tiny_ce}) as server:
        response = server.client().post("/v1/search", json={"query": "panda"})
        assert response.status_code == 503 and response.json()["error"]["code"] == "not_ready"
        with IndexWriter(tmp_path) as writer:
            writer.upsert([Document("p", "a panda", "Panda")])
        assert [r["id"] for r in post(server, query="panda")["results"]] == ["p"]
        with IndexWriter(tmp_path) as writer:  # updated while served: the next request sees it
            writer.upsert([Document("q", "two pandas")])
        body = post(server, query="panda")
        assert body["generation"] == 2 and {r["id"] for r in body["results"]} == {"p", "q"}


def test_serve_has_an_index_option() -> None:
    from typer.testing import CliRunner

    from rerankd.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "--index" in result.output


def test_a_route_gives_each_user_one_arm_named_in_the_header(search_server: RunningServer) -> None:
    """/v1/search draws a route's arm the way /v1/rerank does: once per request (the route's counter moves by one),
    the same arm for every request of one x-rerankd-user, and the arm in the body and the x-rerankd-model header."""
    before = sum(search_server.metric("rerankd_route_requests_total", route="ab", model=m) for m in ("tiny", "minilm"))
    arms: dict[str, set[str]] = {}
    with search_server.client() as client:
        for user in [f"user-{i}" for i in range(16)]:
            for query in ("panda", "capital city", "coffee"):
                answer = client.post("/v1/search", json={"query": query, "k": 5, "model": "ab"},
                                     headers={"x-rerankd-user": user})  # fmt: skip
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-rerankd-model"] == answer.json()["model"]
                arms.setdefault(user, set()).add(answer.json()["model"])
    assert all(len(seen) == 1 for seen in arms.values()), arms
    assert set().union(*arms.values()) == {"tiny", "minilm"}  # 16 users all on one arm: p = 2^-15
    after = sum(search_server.metric("rerankd_route_requests_total", route="ab", model=m) for m in ("tiny", "minilm"))
    assert after - before == 16 * 3


def test_feedback_on_a_search_measures_the_lift_over_the_first_stage(search_server: RunningServer) -> None:
    """The response id takes POST /v1/feedback; clicked indices are the results' first-stage positions, so the rank
    lift is (first-stage position - served position) of the clicked result."""
    with search_server.client() as client:
        answer = client.post("/v1/search", json={"query": "panda", "k": 10, "model": "ab"},
                             headers={"x-rerankd-user": "feedback-user"})  # fmt: skip
        body = answer.json()
        assert body["id"].startswith("search-") and body["candidates"] == 4
        results = body["results"]
        assert sorted(r["index"] for r in results) == list(range(4))
        assert all(r["index"] == r["first_stage_rank"] - 1 for r in results)
        clicked = max(results, key=lambda r: (abs(r["index"] - (r["rank"] - 1)), r["index"]))
        labels = {"route": "ab", "model": body["model"], "measure": "rank_lift"}
        lift_before = search_server.metric("rerankd_feedback_value_sum", **labels)
        given = client.post("/v1/feedback", json={"id": body["id"], "clicked": [clicked["index"]]})
        outside = client.post("/v1/feedback", json={"id": body["id"], "clicked": [4]})
        first_stage_only = client.post("/v1/search", json={"query": "panda", "rerank": False}).json()
    assert given.status_code == 202, given.text
    assert (given.json()["route"], given.json()["model"]) == ("ab", body["model"])
    lift = search_server.metric("rerankd_feedback_value_sum", **labels) - lift_before
    assert lift == clicked["index"] - (clicked["rank"] - 1)
    assert outside.status_code == 400  # 4 candidates were ranked: indices 0..3
    assert first_stage_only["id"] is None and first_stage_only["model"] is None


def test_a_shadow_scores_search_candidates_too(search_server: RunningServer) -> None:
    admin = {"Authorization": "Bearer admin-key"}
    labels = {"route": "tiny", "model": "tiny", "candidate": "minilm", "outcome": "done"}
    before = search_server.metric("rerankd_shadow_requests_total", **labels)
    with search_server.client() as client:
        shadow = client.put("/admin/shadows/tiny", json={"candidate": "minilm", "fraction": 1.0}, headers=admin)
        assert shadow.status_code == 200, shadow.text
        try:
            assert post(search_server, query="capital city", k=5, model="tiny")["model"] == "tiny"
            deadline = time.monotonic() + 30
            while search_server.metric("rerankd_shadow_requests_total", **labels) == before:
                assert time.monotonic() < deadline, "the shadow never scored the search's candidates"
                time.sleep(0.02)
        finally:
            client.delete("/admin/shadows/tiny", headers=admin)


def rerank_scores(server: RunningServer, query: str, documents: list[str], **options: object) -> list[float]:
    """/v1/rerank's scores of ``documents`` in input order (the reference /v1/search must agree with)."""
    body = {"model": "tiny", "query": query, "documents": documents, **options}
    answer = server.client().post("/v1/rerank", json=body)
    assert answer.status_code == 200, answer.text
    scores = {r["index"]: r["relevance_score"] for r in answer.json()["results"]}
    return [scores[i] for i in range(len(documents))]


def test_raw_scores_are_the_logits(search_server: RunningServer, dense_index: Path) -> None:
    candidates = BM25Retriever(dense_index).retrieve("capital city", k=5)
    bodies = [c.document.body for c in candidates]
    raw = post(search_server, query="capital city", k=5, model="tiny", raw_scores=True)["results"]
    normal = post(search_server, query="capital city", k=5, model="tiny")["results"]
    logits = rerank_scores(search_server, "capital city", bodies, raw_scores=True)
    assert {r["id"]: r["score"] for r in raw} == {
        c.id: pytest.approx(s, abs=1e-6) for c, s in zip(candidates, logits, strict=True)
    }
    probability = {r["id"]: r["score"] for r in normal}
    assert all(probability[r["id"]] == pytest.approx(1 / (1 + math.exp(-r["score"])), abs=1e-6) for r in raw)


def test_chunking_options_score_each_candidate_by_its_best_chunk(
    search_server: RunningServer, dense_index: Path
) -> None:
    candidates = BM25Retriever(dense_index).retrieve("panda", k=10)
    bodies = [c.document.body for c in candidates]
    options = {"max_tokens_per_doc": 8, "max_chunks_per_doc": 3}
    chunked = post(search_server, query="panda", k=10, model="tiny", **options)
    whole = post(search_server, query="panda", k=10, model="tiny")
    expected = rerank_scores(search_server, "panda", bodies, **options)
    assert {r["id"]: r["score"] for r in chunked["results"]} == {
        c.id: pytest.approx(s, abs=1e-6) for c, s in zip(candidates, expected, strict=True)
    }
    assert {r["id"]: r["score"] for r in chunked["results"]} != {r["id"]: r["score"] for r in whole["results"]}
    assert chunked["warnings"], "chunks past max_chunks_per_doc are reported, as /v1/rerank reports them"
    too_many = search_server.client().post("/v1/search", json={"query": "panda", "model": "tiny",
                                                               "max_chunks_per_doc": 10_000})  # fmt: skip
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_chunks_per_doc"


def test_weighted_fusion(search_server: RunningServer, dense_index: Path, encoder: Reranker) -> None:
    query = "a bear that eats bamboo"
    weighted = post(search_server, query=query, retriever="hybrid", fusion="weighted", k=6, top_n=None, rerank=False)
    rrf = post(search_server, query=query, retriever="hybrid", k=6, top_n=None, rerank=False)
    expected = make_retriever("hybrid", dense_index, encoder, fusion="weighted").retrieve(query, k=6)
    assert [(r["id"], r["first_stage_score"]) for r in weighted["results"]] == [
        (c.id, pytest.approx(c.score, abs=1e-6)) for c in expected
    ]
    assert max(r["first_stage_score"] for r in weighted["results"]) <= 1.0 + 1e-6  # 0.5 + 0.5 at most
    assert [r["first_stage_score"] for r in weighted["results"]] != [r["first_stage_score"] for r in rrf["results"]]


# ---------------------------------------------------------------------------------------------- a search cluster
# Contract tests: `rerankd serve --first-stage elasticsearch|opensearch` against the local _search stand-in.
PANDA_ROWS = [row for row in ROWS if row["id"] in ("d01", "d02", "d09", "d10")]
PANDA_HITS = search_response(
    [(row["id"], 9.0 - i, {"title": row["title"], "body": row["text"], "meta": row["metadata"]})
     for i, row in enumerate(PANDA_ROWS)]
)  # fmt: skip


def cluster_settings(flavor: str, url: str, **fields: object) -> Settings:
    return Settings(cache="none", first_stage=flavor, first_stage_url=(url,), first_stage_index="docs",  # type: ignore[arg-type]
                    first_stage_fields="text=body,metadata=meta,filter_prefix=meta.",
                    first_stage_auth="elastic:changeme", **fields)  # fmt: skip


@pytest.mark.contract
@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_search_reranks_the_clusters_candidates(flavor: str, tiny_ce: Reranker) -> None:
    with fake_engine(flavor) as engine, serve(cluster_settings(flavor, engine.url), {"tiny": tiny_ce}) as server:
        engine.answer(PANDA_HITS)
        body = post(server, query="panda", k=4, top_n=3, model="tiny", filters={"lang": "en"})
        sent = engine.requests[-1]
        wrong = server.client().post("/v1/search", json={"query": "panda", "retriever": "bm25"})
        other = "opensearch" if flavor == "elasticsearch" else "elasticsearch"
        other_engine = server.client().post("/v1/search", json={"query": "panda", "retriever": other})
        bodies = [f"{row['title']} {row['text']}" for row in PANDA_ROWS]
        expected = dict(zip([r["id"] for r in PANDA_ROWS], rerank_scores(server, "panda", bodies), strict=True))
    assert (sent.method, sent.path.split("?")[0]) == ("POST", "/docs/_search")
    assert sent.body == {"query": {"bool": {"must": [{"multi_match": {"query": "panda", "fields": ["body", "title"]}}],
                                            "filter": [{"term": {"meta.lang": "en"}}]}}, "size": 4}  # fmt: skip
    assert sent.headers["authorization"].startswith("Basic ")
    assert body["retriever"] == flavor and body["generation"] is None and body["candidates"] == 4
    assert body["id"].startswith("search-") and body["model"] == "tiny"
    ordered = sorted(expected, key=lambda i: -expected[i])[:3]
    assert [r["id"] for r in body["results"]] == ordered
    assert [r["score"] for r in body["results"]] == pytest.approx([expected[i] for i in ordered], abs=1e-6)
    first = {row["id"]: (9.0 - i, i) for i, row in enumerate(PANDA_ROWS)}
    assert all((r["first_stage_score"], r["index"]) == first[r["id"]] for r in body["results"])
    assert body["results"][0]["metadata"]["lang"] == "en"
    assert wrong.status_code == 400 and "no search index" in wrong.json()["error"]["message"]
    assert other_engine.status_code == 400 and other_engine.json()["error"]["param"] == "retriever"


@pytest.mark.contract
@pytest.mark.parametrize("flavor", ["elasticsearch", "opensearch"])
def test_a_cluster_that_is_down_is_a_typed_503_and_the_server_stays_up(flavor: str, tiny_ce: Reranker) -> None:
    with fake_engine(flavor) as engine, serve(cluster_settings(flavor, engine.url), {"tiny": tiny_ce}) as server:
        engine.answer(CLUSTER_BLOCK, status=503)
        blocked = server.client().post("/v1/search", json={"query": "panda", "model": "tiny"})
        scored = server.metric("rerankd_scored_pairs_total", model="tiny")  # nothing reached the model
        engine.answer(PANDA_HITS)
        recovered = post(server, query="panda", model="tiny")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens there once the probe closes
    with serve(cluster_settings(flavor, closed), {"tiny": tiny_ce}) as server, server.client() as client:
        down = client.post("/v1/search", json={"query": "panda", "model": "tiny"})
        health = client.get("/health")
        rerank = client.post("/v1/rerank", json={"model": "tiny", "query": "panda", "documents": ["a panda"]})
        nothing_scored = server.metric("rerankd_scored_pairs_total", model="tiny") == 1  # only /v1/rerank's pair
    for failed in (blocked, down):
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"]["code"] == "first_stage_unavailable"
        assert "unavailable" in failed.json()["error"]["message"]
    assert scored == 0 and recovered["candidates"] == 4
    assert health.status_code == 200 and rerank.status_code == 200 and nothing_scored


@pytest.mark.contract
def test_the_deadline_covers_retrieval(tiny_ce: Reranker) -> None:
    """--timeout counts from the request's arrival and covers retrieval: a first stage slower than it gets the
    documented 429 `timeout` at the deadline, not once the slow cluster has answered."""
    with fake_engine("elasticsearch") as engine:
        settings = cluster_settings("elasticsearch", engine.url, request_timeout_s=0.5, retry_after_s=2)
        engine.answer(PANDA_HITS, delay_s=1.5)
        with serve(settings, {"tiny": tiny_ce}) as server:
            started = time.monotonic()
            late = server.client().post("/v1/search", json={"query": "panda", "model": "tiny"})
            waited = time.monotonic() - started
            engine.answer(PANDA_HITS)
            in_time = post(server, query="panda", model="tiny")
    assert late.status_code == 429, late.text
    assert late.json()["error"]["code"] == "timeout" and late.headers["retry-after"] == "2"
    assert waited < 1.4  # answered at the deadline, not when the slow cluster finally answered
    assert in_time["candidates"] == 4


@pytest.mark.contract
def test_a_hung_cluster_never_holds_up_reranking(tiny_ce: Reranker) -> None:
    """First-stage searches run on threads of their own: 12 searches stuck on a cluster that answers after 3 s (each
    a 429 at its 0.5 s deadline) leave the threads that tokenise /v1/rerank requests free, so a rerank request sent
    meanwhile gets its 200 at once instead of timing out behind them."""
    import concurrent.futures

    with fake_engine("elasticsearch") as engine:
        engine.answer(PANDA_HITS, delay_s=3.0)
        settings = cluster_settings("elasticsearch", engine.url, request_timeout_s=0.5)
        with serve(settings, {"tiny": tiny_ce}) as server, concurrent.futures.ThreadPoolExecutor(12) as pool:
            stuck = [pool.submit(server.client().post, "/v1/search", json={"query": "panda", "model": "tiny"})
                     for _ in range(12)]  # fmt: skip
            time.sleep(0.8)  # every search has hit its deadline; their cluster calls are still waiting
            started = time.monotonic()
            rerank = server.client().post("/v1/rerank", json={"model": "tiny", "query": "panda", "documents": ["a"]})
            waited = time.monotonic() - started
            statuses = [future.result().status_code for future in stuck]
    assert rerank.status_code == 200, rerank.text
    assert waited < 0.4
    assert statuses == [429] * 12
