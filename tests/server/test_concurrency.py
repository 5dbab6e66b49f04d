"""Concurrent clients over real HTTP: score parity under cross-request batching, fairness, and dropping
the queued pairs of a client that disconnects."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from rerankd import Reranker
from tests.server.conftest import RunningServer, ServerFactory
from tests.tiny_models import corpus

pytestmark = pytest.mark.timeout(90)


def test_32_concurrent_clients_get_the_offline_scores(start_server: ServerFactory, bert: Reranker) -> None:
    server = start_server({"tiny": bert})
    queries = [f"question {i}: " + " ".join(corpus(seed=100 + i, n=1, min_words=2, max_words=8)) for i in range(32)]
    documents = [corpus(seed=200 + i, n=3 + i % 6, min_words=2, max_words=60) for i in range(32)]

    async def clients() -> list[dict]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            requests = [
                client.post("/rerank", json={"query": q, "documents": docs, "return_documents": False})
                for q, docs in zip(queries, documents, strict=True)
            ]
            responses = await asyncio.gather(*requests)
        assert all(r.status_code == 200 for r in responses)
        return [r.json() for r in responses]

    answers = asyncio.run(clients())
    for query, docs, answer in zip(queries, documents, answers, strict=True):
        want = {r.index: r.score for r in bert.rank(query, docs)}
        got = {r["index"]: r["relevance_score"] for r in answer["results"]}
        assert got.keys() == want.keys()
        assert max(abs(got[i] - want[i]) for i in want) <= 1e-5
        assert answer["usage"]["prompt_tokens"] == sum(bert.count_tokens(query, docs))
    batch_rows = server.metric("rerankd_batch_size_sum", model="tiny")
    batches = server.metric("rerankd_batch_size_count", model="tiny")
    assert batch_rows == sum(len(d) for d in documents)
    assert batches < 32  # requests shared forward passes


def _post_in_thread(server: RunningServer, body: dict, out: dict[str, object], key: str) -> threading.Thread:
    def run() -> None:
        with server.client(timeout=60) as client:
            out[key] = client.post("/rerank", json=body)
        out[f"{key}_done_at"] = time.perf_counter()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_until_queued(server: RunningServer, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while server.metric("rerankd_queue_depth", model="tiny") == 0:
        assert time.monotonic() < deadline, "the big request never reached the queue"
        time.sleep(0.005)


def test_a_small_request_is_not_starved_by_a_big_one(start_server: ServerFactory, slow_bert: Reranker) -> None:
    server = start_server({"tiny": slow_bert}, max_queue=10_000)
    docs = corpus(seed=5, n=1000, min_words=3, max_words=12)
    out: dict[str, object] = {}
    big = _post_in_thread(server, {"query": "giant panda", "documents": docs, "return_documents": False}, out, "big")
    _wait_until_queued(server)
    small = _post_in_thread(server, {"query": "giant panda", "documents": docs[:5]}, out, "small")
    small.join(timeout=60)
    big.join(timeout=60)
    assert out["big"].status_code == 200 and out["small"].status_code == 200  # type: ignore[attr-defined]
    assert out["small_done_at"] < out["big_done_at"]  # type: ignore[operator]
    small_scores = {r["index"]: r["relevance_score"] for r in out["small"].json()["results"]}  # type: ignore[attr-defined]
    big_scores = {r["index"]: r["relevance_score"] for r in out["big"].json()["results"]}  # type: ignore[attr-defined]
    assert all(abs(small_scores[i] - big_scores[i]) <= 1e-5 for i in range(5))


def test_a_disconnected_client_has_its_queued_pairs_dropped(start_server: ServerFactory, slow_bert: Reranker) -> None:
    server = start_server({"tiny": slow_bert}, max_queue=10_000, max_documents=5000)
    docs = corpus(seed=6, n=3000, min_words=3, max_words=12)
    with server.client(timeout=0.5) as client, pytest.raises(httpx.ReadTimeout):
        client.post("/rerank", json={"query": "giant panda", "documents": docs})
    deadline = time.monotonic() + 15
    while server.metric("rerankd_dropped_items_total", model="tiny") == 0:
        assert time.monotonic() < deadline, "the queued pairs were never dropped"
        time.sleep(0.01)
    assert server.metric("rerankd_queue_depth", model="tiny") == 0
    computed = server.metric("rerankd_batch_size_sum", model="tiny")
    dropped = server.metric("rerankd_dropped_items_total", model="tiny")
    assert computed < 3000 and computed + dropped <= 3000 + 64  # at most the pool in flight ran to completion
    assert server.metric("rerankd_requests_total", route="/rerank", status="499") == 1
    with server.client() as client:  # and the server goes on
        assert client.post("/rerank", json={"query": "panda", "documents": docs[:3]}).status_code == 200
