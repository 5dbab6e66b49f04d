"""Feedback end to end, against live servers: every rerank and score dialect answers with a response id that
POST /v1/feedback joins with the ranking it served; dwell turns short clicks into no clicks; served rankings kept in
a Redis that several servers share (keys expire there), and a frozen or dead Redis never fails or slows a rerank
request while feedback gets a typed 503."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from rerankd import Reranker
from rerankd.cli import app
from rerankd.errors import StoreUnavailable
from rerankd.server.admin.feedback import Served
from rerankd.server.admin.served_store import MemoryServedStore, RedisServedStore, make_served_store
from rerankd.server.redis_cache import CircuitBreaker
from rerankd.settings import Settings
from tests.server.conftest import RedisServer, RunningServer, ServerFactory, serve
from tests.tiny_models import corpus

pytestmark = pytest.mark.timeout(120)
QUERY = "what is the giant panda?"
DOCS = corpus(seed=61, n=5, min_words=4, max_words=14)
HEADER = "x-rerankd-response-id"

# Each dialect: (path, body, how to read the served order, best first, from the answer; where the id is)
Order = Callable[[Any], list[int]]


def by_score(items: list[dict[str, Any]], key: str = "score") -> list[int]:
    return [item["index"] for item in sorted(items, key=lambda item: -item[key])]


DIALECTS: dict[str, tuple[str, dict[str, Any], Order, str]] = {
    "cohere-v1": ("/v1/rerank", {"query": QUERY, "documents": DOCS}, lambda b: [r["index"] for r in b["results"]],
                  "body"),
    "jina": ("/v1/rerank", {"model": "tiny", "query": QUERY, "documents": DOCS, "top_n": 3,
                            "return_documents": False}, lambda b: [r["index"] for r in b["results"]], "body"),
    "cohere-v1-/rerank": ("/rerank", {"query": QUERY, "documents": DOCS}, lambda b: [r["index"] for r in b["results"]],
                          "body"),
    "cohere-v2": ("/v2/rerank", {"model": "tiny", "query": QUERY, "documents": DOCS},
                  lambda b: [r["index"] for r in b["results"]], "body"),
    "tei-rerank": ("/rerank", {"query": QUERY, "texts": DOCS}, by_score, "header"),
    "vllm-v1-score": ("/v1/score", {"text_1": QUERY, "text_2": DOCS}, lambda b: by_score(b["data"]), "body"),
    "vllm-score": ("/score", {"model": "tiny", "queries": QUERY, "documents": DOCS}, lambda b: by_score(b["data"]),
                   "body"),
    "tei-predict": ("/predict", {"inputs": [[QUERY, d] for d in DOCS]},
                    lambda b: [i for i, _ in sorted(enumerate(b), key=lambda x: -x[1][0]["score"])], "header"),
    "tei-predict-one": ("/predict", {"inputs": [QUERY, DOCS[0]]}, lambda b: [0], "header"),
}  # fmt: skip


@pytest.fixture(scope="module")
def server(bert: Reranker) -> Iterator[RunningServer]:
    with serve(Settings(cache="none", routes=("main=tiny:100",)), {"tiny": bert}) as running:
        yield running


def served(client: httpx.Client, dialect: str) -> tuple[str, list[int], httpx.Response]:
    """Ask in ``dialect``; the response id and the order the answer shows, best first."""
    path, body, order_of, where = DIALECTS[dialect]
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    response_id = answer.headers[HEADER]
    if where == "body":
        assert answer.json()["id"] == response_id
    else:
        assert isinstance(answer.json(), list)  # TEI's bare array stays as TEI defines it
    return response_id, order_of(answer.json()), answer


@pytest.mark.parametrize("dialect", list(DIALECTS))
def test_every_dialect_answers_with_an_id_that_feedback_joins(server: RunningServer, dialect: str) -> None:
    """Clicking the document the answer showed second adds reciprocal rank 1/2 (1 for a single pair): the ranking
    remembered under the id is the one the answer showed."""
    with server.client() as client:
        response_id, order, _ = served(client, dialect)
        position = min(1, len(order) - 1)
        before = server.metric("rerankd_feedback_value_sum", route="tiny", measure="mrr")
        given = client.post("/v1/feedback", json={"id": response_id, "clicked": [order[position]]})
    assert given.status_code == 202, given.text
    assert given.json() == {"status": "recorded", "route": "tiny", "model": "tiny", "short_clicks": []}
    after = server.metric("rerankd_feedback_value_sum", route="tiny", measure="mrr")
    assert after - before == pytest.approx(1 / (position + 1))


def test_a_route_is_named_in_the_feedback_of_every_dialect(server: RunningServer) -> None:
    with server.client() as client:
        answer = client.post("/rerank", json={"model": "main", "query": QUERY, "texts": DOCS})
        given = client.post("/v1/feedback", json={"id": answer.headers[HEADER], "clicked": [0]})
    assert answer.headers["x-rerankd-model"] == "tiny"
    assert given.status_code == 202 and given.json()["route"] == "main"


def test_short_clicks_do_not_count_and_dwell_is_exported_per_arm(server: RunningServer) -> None:
    labels = {"route": "tiny", "model": "tiny"}
    with server.client() as client:
        response_id, order, _ = served(client, "cohere-v2")
        top = order[0]
        mrr = server.metric("rerankd_feedback_value_sum", measure="mrr", **labels)
        short = client.post("/v1/feedback", json={"id": response_id, "clicked": [top], "dwell_ms": {str(top): 2000}})
        assert short.status_code == 202 and short.json()["short_clicks"] == [top]
        assert server.metric("rerankd_feedback_value_sum", measure="mrr", **labels) == mrr  # came straight back
        assert server.metric("rerankd_feedback_short_clicks_total", **labels) == 1
        read = client.post("/v1/feedback", json={"id": response_id, "clicked": [top], "dwell_ms": {str(top): 45000}})
        assert read.status_code == 202 and read.json()["short_clicks"] == []
        assert server.metric("rerankd_feedback_value_sum", measure="mrr", **labels) == mrr + 1
        not_clicked = client.post("/v1/feedback", json={"id": response_id, "clicked": [top],
                                                        "dwell_ms": {str(order[1]): 9000}})  # fmt: skip
        negative = client.post("/v1/feedback", json={"id": response_id, "clicked": [top], "dwell_ms": {str(top): -1}})
    assert server.metric("rerankd_feedback_dwell_seconds_count", **labels) == 2
    assert server.metric("rerankd_feedback_dwell_seconds_sum", **labels) == pytest.approx(47.0)
    assert server.metric("rerankd_feedback_dwell_seconds_bucket", le="5.0", **labels) == 1
    assert not_clicked.status_code == 400 and not_clicked.json()["error"]["param"] == "dwell_ms"
    assert "not in clicked" in not_clicked.json()["message"]
    assert negative.status_code == 422


def test_the_dwell_threshold_is_a_setting(start_server: ServerFactory, bert: Reranker) -> None:
    server = start_server({"tiny": bert}, feedback_min_dwell_ms=0)
    with server.client() as client:
        response_id, order, _ = served(client, "cohere-v1")
        given = client.post("/v1/feedback", json={"id": response_id, "clicked": [order[0]],
                                                  "dwell_ms": {str(order[0]): 10}})  # fmt: skip
    assert given.json()["short_clicks"] == []
    assert server.metric("rerankd_feedback_value_sum", route="tiny", measure="mrr") == 1.0


def test_feedback_store_setting_is_checked() -> None:
    assert Settings(feedback_store=" redis://cache:6379/1 ").feedback_store == "redis://cache:6379/1"
    with pytest.raises(ValueError, match="use memory or a Redis URL"):
        Settings(feedback_store="memcached://cache")
    assert isinstance(make_served_store("memory", 60), MemoryServedStore)
    refused = CliRunner().invoke(app, ["serve", "--port", "0", "--feedback-store", "memcached://cache"])
    assert refused.exit_code == 2 and "invalid --feedback-store 'memcached://cache'" in refused.output
    assert "RERANKD_FEEDBACK_STORE" in refused.output


def test_memory_store_forgets_after_the_ttl_and_beyond_its_bound() -> None:
    async def main() -> None:
        store = MemoryServedStore(max_entries=2, ttl_s=0.2)
        for name in ("a", "b", "c"):
            store.remember(name, Served("r", "m", (1, 0), time.time()))
        assert await store.get("a") is None and await store.get("c") is not None and len(store) == 2
        await asyncio.sleep(0.3)
        assert await store.get("c") is None

    asyncio.run(main())


def wait_for_key(url: str, response_id: str, present: bool = True, timeout: float = 10.0) -> None:
    import redis

    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while bool(client.exists(f"rerankd:served:v1:{response_id}")) != present:
        assert time.monotonic() < deadline, f"rerankd:served:v1:{response_id} never became {present}"
        time.sleep(0.02)
    client.close()


def test_redis_store_round_trip_and_expiry_in_redis(redis_url: str) -> None:
    async def main() -> None:
        store = make_served_store(redis_url, ttl_s=1.0)
        assert isinstance(store, RedisServedStore)
        ranking = Served("main", "b", (2, 0, 1), time.time())
        store.remember("rerank-rt", ranking)
        assert await store.get("rerank-rt") == ranking  # found before the write-behind reached Redis
        await store.flush()
        assert 0 < await store._client.pttl("rerankd:served:v1:rerank-rt") <= 1000
        other = make_served_store(redis_url, ttl_s=1.0)  # another process's view: Redis only
        assert await other.get("rerank-rt") == ranking
        await asyncio.sleep(1.2)
        assert await store._client.exists("rerankd:served:v1:rerank-rt") == 0  # expired by Redis itself
        assert await other.get("rerank-rt") is None
        await store.close()
        await other.close()

    asyncio.run(main())


def test_unreachable_redis_fails_feedback_lookups_with_a_typed_error_only() -> None:
    async def main() -> None:
        store = RedisServedStore("redis://127.0.0.1:1/0", breaker=CircuitBreaker(failures=2, backoff_s=60))
        store.remember("rerank-x", Served("r", "m", (0,), time.time()))  # never raises
        await store.flush()
        assert store.stats.dropped == 1 and store.stats.errors["write"] == 1
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await store.get("rerank-unknown")
            assert time.monotonic() - started < 1.0
        assert store.stats.errors["read"] == 1 and not store.stats.available  # the breaker opened: no more waits
        await store.close()

    asyncio.run(main())


def test_two_servers_sharing_redis_join_feedback_for_each_other(
    start_server: ServerFactory, bert: Reranker, redis_url: str
) -> None:
    first = start_server({"tiny": bert}, routes=("main=tiny:100",), feedback_store=redis_url)
    second = start_server({"tiny": bert}, routes=("main=tiny:100",), feedback_store=redis_url)
    with first.client() as client:
        cohere = client.post("/v1/rerank", json={"model": "main", "query": QUERY, "documents": DOCS}).json()
        tei = client.post("/rerank", json={"model": "main", "query": QUERY, "texts": DOCS})
    ids = [cohere["id"], tei.headers[HEADER]]
    for response_id in ids:
        wait_for_key(redis_url, response_id)  # write-behind: off the request path, within milliseconds
    with second.client() as client:
        tops = [cohere["results"][0]["index"], tei.json()[0]["index"]]
        given = [
            client.post("/v1/feedback", json={"id": response_id, "clicked": [top]})
            for response_id, top in zip(ids, tops, strict=True)
        ]
        unknown = client.post("/v1/feedback", json={"id": "rerank-never-served", "clicked": [0]})
    assert [g.status_code for g in given] == [202, 202], [g.text for g in given]
    assert {g.json()["route"] for g in given} == {"main"} and {g.json()["model"] for g in given} == {"tiny"}
    assert unknown.status_code == 404
    assert second.metric("rerankd_feedback_events_total", route="main") == 2
    assert second.metric("rerankd_feedback_value_sum", route="main", measure="mrr") == 2.0  # clicked the top ones
    assert first.metric("rerankd_feedback_events_total", route="main") == 0


def test_served_rankings_expire_in_redis(start_server: ServerFactory, bert: Reranker, redis_url: str) -> None:
    server = start_server({"tiny": bert}, feedback_store=redis_url, feedback_ttl_s=1.0)
    with server.client() as client:
        response_id = client.post("/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS}).json()["id"]
        wait_for_key(redis_url, response_id)
        wait_for_key(redis_url, response_id, present=False, timeout=5)
        late = client.post("/v1/feedback", json={"id": response_id, "clicked": [0]})
    assert late.status_code == 404


def test_a_frozen_or_dead_redis_never_fails_or_slows_reranking(
    start_server: ServerFactory, bert: Reranker, private_redis: RedisServer
) -> None:
    """SIGSTOP on redis-server: rerank requests answer as fast as ever; feedback gets a typed 503 within a short
    timeout (then at once: the breaker); after SIGCONT feedback is joined again; SIGKILL: the same, never a 500."""
    server = start_server({"tiny": bert}, feedback_store=private_redis.url)
    body = {"model": "tiny", "query": QUERY, "documents": DOCS}
    with server.client(timeout=5.0) as client:
        before = client.post("/v1/rerank", json=body).json()["id"]
        wait_for_key(private_redis.url, before)
        private_redis.process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(10):
                started = time.monotonic()
                assert client.post("/v1/rerank", json=body).status_code == 200
                assert time.monotonic() - started < 1.0
            for _ in range(4):
                started = time.monotonic()
                refused = client.post("/v1/feedback", json={"id": before, "clicked": [0]})
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "store_unavailable"
                assert time.monotonic() - started < 1.5
            assert server.metric("rerankd_feedback_store_available", backend="redis") == 0
        finally:
            private_redis.process.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20  # the breaker lets one lookup probe Redis after its 5 s backoff
        while (again := client.post("/v1/feedback", json={"id": before, "clicked": [0]})).status_code != 202:
            assert again.status_code == 503 and time.monotonic() < deadline, again.text
            time.sleep(0.2)
        assert server.metric("rerankd_feedback_store_available", backend="redis") == 1
        private_redis.process.kill()
        private_redis.process.wait(timeout=10)
        assert client.post("/v1/rerank", json=body).status_code == 200
        gone = client.post("/v1/feedback", json={"id": "rerank-after-redis-died", "clicked": [0]})
    assert gone.status_code == 503
    assert server.metric("rerankd_requests_total", status="500") == 0
    assert server.metric("rerankd_feedback_store_errors_total", backend="redis", op="read") >= 1


def test_feedback_bodies_are_bounded_and_cheap(server: RunningServer) -> None:
    """A repeated click counts once; more than 10,000 indices, or a non-finite dwell, is a 422; a key that is a
    Unicode digit but no integer ("²") is a 400, never a 500; 10,000 clicks are answered at once (set lookups)."""
    labels = {"route": "tiny", "model": "tiny"}
    with server.client() as client:
        response_id, order, _ = served(client, "cohere-v2")
        top = order[0]
        mrr = server.metric("rerankd_feedback_value_sum", measure="mrr", **labels)
        repeated = client.post("/v1/feedback", json={"id": response_id, "clicked": [top] * 10_000})
        assert repeated.status_code == 202, repeated.text
        assert server.metric("rerankd_feedback_value_sum", measure="mrr", **labels) == mrr + 1  # one click
        too_many = client.post("/v1/feedback", json={"id": response_id, "clicked": [top] * 10_001})
        raw = f'{{"id": "{response_id}", "clicked": [{top}], "dwell_ms": {{"{top}": Infinity}}}}'
        infinite = client.post("/v1/feedback", content=raw, headers={"content-type": "application/json"})
        superscript = client.post("/v1/feedback", json={"id": response_id, "clicked": [top], "dwell_ms": {"²": 1}})
        graded = client.post("/v1/feedback", json={"id": response_id, "relevance": {"²": 2, str(top): 1}})
    assert too_many.status_code == 422 and infinite.status_code == 422, (too_many.text, infinite.text)
    assert superscript.status_code == 400 and superscript.json()["error"]["param"] == "dwell_ms"
    assert graded.status_code == 202, graded.text


def test_memory_store_is_bounded_by_ranked_documents_and_drops_expired_entries_as_it_goes() -> None:
    async def main() -> None:
        store = MemoryServedStore(max_entries=100, ttl_s=60, max_positions=10)
        store.remember("old", Served("r", "m", tuple(range(4)), time.time() - 120))  # already past the window
        store.remember("a", Served("r", "m", tuple(range(4)), time.time()))
        assert len(store) == 1 and await store.get("a") is not None  # "old" went when "a" arrived
        store.remember("b", Served("r", "m", tuple(range(4)), time.time()))
        store.remember("c", Served("r", "m", tuple(range(4)), time.time()))  # 12 positions > 10: "a" goes
        assert await store.get("a") is None and await store.get("b") is not None and len(store) == 2
        store.remember("c", Served("r", "m", tuple(range(2)), time.time()))  # replaced, not counted twice
        store.remember("d", Served("r", "m", tuple(range(4)), time.time()))  # 4 + 2 + 4 = 10: all kept
        assert len(store) == 3

    asyncio.run(main())
