"""Fixtures for the deploy/ checks: a live rerankd (real uvicorn, tiny models) that has served every kind of
request, and the samples its /metrics exports."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rerankd import Reranker
from rerankd.settings import Settings
from tests.server.conftest import RunningServer, serve

QUERY = "what is the giant panda bear of china?"
DOCS = ["the giant panda is a bear species of china", "paris is the capital city of france", "hello world"]
ADMIN = {"Authorization": "Bearer deploy-admin"}


def exported_samples(text: str) -> dict[str, set[str]]:
    """Sample name -> label names seen on it, from a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def drive(server: RunningServer) -> None:
    """One of each: rerank twice (a cache hit), Cohere v2, embeddings, a 404, the probes."""
    with server.client() as client:
        for _ in range(2):
            assert (
                client.post("/v1/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS}).status_code == 200
            )
        assert client.post("/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": DOCS}).status_code == 200
        assert client.post("/v1/embeddings", json={"model": "minilm", "input": DOCS}).status_code == 200
        assert client.post("/v1/rerank", json={"model": "nope", "query": QUERY, "documents": DOCS}).status_code == 404
        assert client.get("/ready").status_code == 200
        assert client.get("/health").status_code == 200


def drive_rollout(server: RunningServer) -> None:
    """The rollout series (docs/rollout.md): a route's arm, a 100% shadow, feedback with a satisfied click (40 s
    dwell), a short click (1 s) and an unknown id."""
    with server.client() as client:
        shadow = client.put("/admin/shadows/main", json={"candidate": "tiny-b", "fraction": 1.0}, headers=ADMIN)
        assert shadow.status_code == 200, shadow.text
        for dwell, short in ((40_000, False), (1_000, True)):
            answer = client.post("/v1/rerank", json={"model": "main", "query": QUERY, "documents": DOCS}).json()
            top = answer["results"][0]["index"]
            event = {"id": answer["id"], "clicked": [top], "dwell_ms": {str(top): dwell}}
            given = client.post("/v1/feedback", json=event)
            assert given.status_code == 202 and given.json()["short_clicks"] == ([top] if short else [])
        assert client.post("/v1/feedback", json={"id": "rerank-unknown", "clicked": [0]}).status_code == 404
    deadline = time.monotonic() + 30  # shadows run after the answers, when the device is idle
    while server.metric("rerankd_shadow_requests_total", outcome="done") < 2:
        assert time.monotonic() < deadline, "the shadow scorings never finished"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def deploy_models(bert_ce: Path, xlmr_ce: Path, minilm_path: Path) -> dict[str, Reranker]:
    return {
        "tiny": Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32"),
        "tiny-b": Reranker.from_pretrained(str(xlmr_ce), device="cpu", dtype="float32"),
        "minilm": Reranker.from_pretrained(str(minilm_path), device="cpu", dtype="float32"),
    }


@pytest.fixture(scope="session")
def live_server(deploy_models: dict[str, Reranker]) -> Iterator[RunningServer]:
    """A server with a score cache that has served one request of each kind, and a route ``main`` (all traffic on
    ``tiny``, ``tiny-b`` its shadow) that has had feedback."""
    settings = Settings(cache="memory", routes=("main=tiny:100,tiny-b:0",), admin_key=("deploy-admin",))
    with serve(settings, deploy_models) as running:
        drive(running)
        drive_rollout(running)
        yield running


@pytest.fixture(scope="session")
def exported(live_server: RunningServer, bert_ce: Path) -> dict[str, set[str]]:
    """Every sample name the server exports, with its label names; a second server, whose one big request times
    out in the queue (tiny forward passes, a 50 ms limit), adds the refusal series (rejections, dropped pairs)."""
    samples = exported_samples(httpx.get(f"{live_server.url}/metrics", timeout=10).text)
    slow = {"tiny": Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32", batch_tokens=64)}
    with serve(Settings(cache="none", request_timeout_s=0.05), slow) as impatient:
        with impatient.client() as client:
            body = {
                "model": "tiny",
                "query": QUERY,
                "documents": [f"document number {i} about pandas" for i in range(400)],
            }
            assert client.post("/v1/rerank", json=body).status_code == 429
        deadline = time.monotonic() + 20  # the queue records the refusal when the request's work times out
        while not (refused := exported_samples(httpx.get(f"{impatient.url}/metrics", timeout=10).text)).get(
            "rerankd_rejections_total"
        ):
            assert time.monotonic() < deadline, "the timed-out request was never counted in rerankd_rejections_total"
            time.sleep(0.05)
        for name, labels in refused.items():
            samples.setdefault(name, set()).update(labels)
    return samples
