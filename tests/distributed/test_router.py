"""The Ray Serve router without a cluster: a request crosses to the scoring app as plain data and comes back whole;
a replica that dies under a request costs one retry, then a JSON 503 with Retry-After; state-changing requests are
not resent; the router authenticates before reading a body. The live kill is in test_ray_serve.py."""

from __future__ import annotations

import asyncio
import json
import pickle
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray.exceptions import ActorDiedError

from rerankd import Reranker
from rerankd.distributed import serve
from rerankd.distributed.app_state import AppState
from rerankd.distributed.forwarding import SEQUENCE_HEADER, ForwardedRequest, ForwardedResponse, call_asgi
from rerankd.distributed.serve import RerankdRouter
from rerankd.server import create_app
from rerankd.settings import Settings
from tests.distributed.test_app_state import Local

QUERY = "what is the giant panda bear of china?"
DOCS = ["the giant panda is a bear species of china", "paris is the capital city of france"]


class FakeCall:
    def __init__(self, outcome: Any) -> None:
        self.outcome, self.cancelled = outcome, False

    def __await__(self) -> Any:
        return self._result().__await__()

    async def _result(self) -> Any:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        if self.outcome == "hang":
            await asyncio.sleep(3600)
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class FakeScorers:
    """A deployment handle whose ``forward.remote`` plays the given outcomes in turn."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes, self.sent, self.calls = list(outcomes), [], []  # type: ignore[var-annotated]
        self.forward = self

    def remote(self, request: ForwardedRequest) -> FakeCall:
        self.sent.append(pickle.loads(pickle.dumps(request)))  # what crosses a Ray call must pickle
        self.calls.append(FakeCall(self.outcomes.pop(0)))
        return self.calls[-1]


OK = ForwardedResponse(200, ((b"content-type", b"application/json"), (b"x-request-id", b"replica")), b'{"ok":1}')


@pytest.fixture(autouse=True)
def app_state(monkeypatch: pytest.MonkeyPatch) -> AppState:
    """The build's state actor, in-process: its secrets (none here) and admin log."""
    state = AppState(built_at=1)
    monkeypatch.setattr(serve, "join_as_router", lambda name, built_at, expected: (Local(state), {}))
    return state


def router_client(scorers: FakeScorers, **settings: Any) -> httpx.AsyncClient:
    router = RerankdRouter(scorers, Settings(**settings).model_dump(mode="json"), ("app-state-test", 1, []))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=router.asgi), base_url="http://router")


def test_a_lost_replica_costs_one_retry() -> None:
    asyncio.run(_test_a_lost_replica_costs_one_retry())


async def _test_a_lost_replica_costs_one_retry() -> None:
    scorers = FakeScorers(ActorDiedError(), OK)
    async with router_client(scorers) as client:
        response = await client.post("/v2/rerank", json={"query": "q"}, headers={"x-request-id": "abc"})
    assert response.status_code == 200 and response.json() == {"ok": 1}
    assert response.headers.get_list("x-request-id") == ["abc"]  # the client's id, once
    assert len(scorers.sent) == 2 and scorers.sent[0] == scorers.sent[1]
    assert json.loads(scorers.sent[0].body) == {"query": "q"} and (b"x-request-id", b"abc") in scorers.sent[0].headers


def test_two_lost_replicas_give_a_json_503_with_retry_after() -> None:
    asyncio.run(_test_two_lost_replicas_give_a_json_503_with_retry_after())


async def _test_two_lost_replicas_give_a_json_503_with_retry_after() -> None:
    scorers = FakeScorers(*[ActorDiedError() for _ in range(4)])  # two requests, each tried twice
    async with router_client(scorers) as client:
        response = await client.post("/v1/rerank", json={"query": "q"})
        tei = await client.post("/predict", json={"inputs": [["q", "d"]]}, headers={"x-request-id": "t1"})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    body = response.json()
    assert body["error"]["code"] == "replica_lost" and "retry" in body["message"] and body["request_id"]
    assert tei.status_code == 503 and set(tei.json()) == {"error", "error_type"}  # TEI clients' error shape


def test_state_changing_requests_are_not_resent() -> None:
    asyncio.run(_test_state_changing_requests_are_not_resent())


async def _test_state_changing_requests_are_not_resent() -> None:
    scorers = FakeScorers(ActorDiedError())
    async with router_client(scorers) as client:
        response = await client.post("/v1/feedback", json={"id": "x"})
    assert response.status_code == 503 and len(scorers.sent) == 1


def test_admin_changes_go_through_the_admin_log(app_state: AppState) -> None:
    asyncio.run(_test_admin_changes_go_through_the_admin_log(app_state))


async def _test_admin_changes_go_through_the_admin_log(app_state: AppState) -> None:
    refused = ForwardedResponse(400, (), b'{"message":"no"}')
    scorers = FakeScorers(OK, refused, OK, OK)
    admin = {"authorization": "Bearer a"}
    async with router_client(scorers, admin_key=("a",)) as client:
        first = await client.put("/admin/routes/ab", json={"weights": {"x": 1}}, headers=admin)
        second = await client.put("/admin/routes/ab", json={"weights": {"y": 1}}, headers=admin)
        read = await client.get("/admin/state", headers=admin)
        forged = await client.post("/v1/rerank", json={}, headers={SEQUENCE_HEADER.decode(): "7"})
    assert (first.status_code, second.status_code, read.status_code, forged.status_code) == (200, 400, 200, 200)
    sequences = [request.header(SEQUENCE_HEADER) for request in scorers.sent]
    assert sequences == [b"1", b"2", None, None]  # changes numbered in log order; a client cannot set the number
    assert [(n, json.loads(change.body)) for n, change in app_state.log] == [(1, {"weights": {"x": 1}})]
    assert b"Bearer a" not in pickle.dumps(app_state.log)  # the log keeps no credentials


def test_the_router_authenticates_before_forwarding_and_keeps_the_body_limit() -> None:
    asyncio.run(_test_the_router_authenticates_before_forwarding_and_keeps_the_body_limit())


async def _test_the_router_authenticates_before_forwarding_and_keeps_the_body_limit() -> None:
    scorers = FakeScorers(OK)
    async with router_client(scorers, api_key=("k",), max_body_bytes=2048) as client:
        denied = await client.post("/v1/rerank", json={"query": "q"})
        too_big = await client.post("/v1/rerank", content=b"x" * 4096, headers={"authorization": "Bearer k"})
        fine = await client.post("/v1/rerank", json={"query": "q"}, headers={"authorization": "Bearer k"})
    assert denied.status_code == 401 and too_big.status_code == 413 and fine.status_code == 200
    assert len(scorers.sent) == 1  # only the authenticated, in-limit request reached a replica


def test_a_client_that_leaves_cancels_the_replica_call() -> None:
    asyncio.run(_test_a_client_that_leaves_cancels_the_replica_call())


async def _test_a_client_that_leaves_cancels_the_replica_call() -> None:
    scorers = FakeScorers("hang")
    router = RerankdRouter(scorers, Settings().model_dump(mode="json"), ("app-state-test", 1, []))
    scope = {"type": "http", "method": "POST", "path": "/v1/rerank", "headers": [], "query_string": b""}
    messages = iter([{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}])
    sent: list[Any] = []

    async def receive() -> Any:
        await asyncio.sleep(0.05)
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    await asyncio.wait_for(router.asgi(scope, receive, send), 30)
    assert scorers.calls[0].cancelled and not [m for m in sent if m["type"] == "http.response.start"]


def test_call_asgi_runs_the_real_app(bert_ce: Path) -> None:
    asyncio.run(_test_call_asgi_runs_the_real_app(bert_ce))


async def _test_call_asgi_runs_the_real_app(bert_ce: Path) -> None:
    tiny = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    app = create_app(Settings(cache="none"), rerankers={"tiny": tiny})
    body = json.dumps({"model": "tiny", "query": QUERY, "documents": DOCS}).encode()
    request = ForwardedRequest("POST", "/v2/rerank", b"", ((b"content-type", b"application/json"),), body)
    async with app.router.lifespan_context(app):
        response = await call_asgi(app, request)
        missing = await call_asgi(app, ForwardedRequest("GET", "/nowhere", b"", (), b""))
    assert response.status == 200
    got = {r["index"]: r["relevance_score"] for r in json.loads(response.body)["results"]}
    want = {r.index: r.score for r in tiny.rank(QUERY, DOCS)}
    assert got == pytest.approx(want, abs=1e-6)
    assert missing.status == 404
