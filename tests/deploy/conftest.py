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


@pytest.fixture(scope="session")
def deploy_models(bert_ce: Path, minilm_path: Path) -> dict[str, Reranker]:
    return {
        "tiny": Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32"),
        "minilm": Reranker.from_pretrained(str(minilm_path), device="cpu", dtype="float32"),
    }


@pytest.fixture(scope="session")
def live_server(deploy_models: dict[str, Reranker]) -> Iterator[RunningServer]:
    """A server with a score cache that has served one request of each kind."""
    with serve(Settings(cache="memory"), deploy_models) as running:
        drive(running)
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
