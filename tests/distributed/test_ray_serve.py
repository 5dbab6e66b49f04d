"""Ray Serve on a local Ray: the server's own FastAPI app as the ingress of autoscaled replicas. The real cohere
SDK gets the plain server's scores; A/B aliases and /metrics work as in `rerankd serve`; a replica killed with
SIGKILL during traffic is replaced, and its requests in flight are retried on the other replica or answered with
rerankd's JSON 503 (never Ray's plain 500, never lost)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rerankd import Reranker
from rerankd.settings import Settings
from tests.distributed.conftest import replica_pids, wait_for
from tests.server.conftest import metric_value
from tests.server.conftest import serve as serve_plain

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
QUERY = "what is the giant panda bear of china?"
DOCS = ["the giant panda is a bear species of china", "paris is the capital city of france", "hello world"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url(local_ray: Any, bert_ce: Path, xlmr_ce: Path) -> Iterator[str]:
    """Two replicas (half a CPU each) serving two models and an A/B alias, like `rerankd serve -m ... --route`."""
    from ray import serve

    from rerankd.distributed.serve import ServeScaling, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = Settings(
        models=(f"tiny={bert_ce}", f"tiny-b={xlmr_ce}"), routes=("ab=tiny:0,tiny-b:1",), device="cpu",
        dtype="float32", cache="none", batch_tokens=256,
    )  # fmt: skip
    scaling = ServeScaling(min_replicas=2, max_replicas=2, num_cpus=0.5)
    serve.run(build_app(settings, scaling), name="rerankd", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


@pytest.fixture(scope="module")
def plain_url(bert_ce: Path, xlmr_ce: Path) -> Iterator[str]:
    settings = Settings(cache="none", routes=("ab=tiny:0,tiny-b:1",))
    rerankers = {
        name: Reranker.from_pretrained(str(path), device="cpu", dtype="float32", batch_tokens=256)
        for name, path in (("tiny", bert_ce), ("tiny-b", xlmr_ce))
    }
    with serve_plain(settings, rerankers) as running:
        yield running.url


def test_cohere_sdk_gets_the_plain_servers_scores(serve_url: str, plain_url: str) -> None:
    import cohere

    for version in (cohere.Client, cohere.ClientV2):
        ray_client, plain = version(api_key="unused", base_url=serve_url), version(api_key="unused", base_url=plain_url)
        for model in ("tiny", "tiny-b"):
            got = ray_client.rerank(model=model, query=QUERY, documents=DOCS)
            want = plain.rerank(model=model, query=QUERY, documents=DOCS)
            assert [r.index for r in got.results] == [r.index for r in want.results]
            assert [r.relevance_score for r in got.results] == pytest.approx(
                [r.relevance_score for r in want.results], abs=1e-6
            )


def test_ab_alias_models_list_and_metrics_come_from_the_same_app(serve_url: str, plain_url: str) -> None:
    body = {"model": "ab", "query": QUERY, "documents": DOCS}
    alias = httpx.post(f"{serve_url}/v1/rerank", json=body, timeout=60).json()
    direct = httpx.post(f"{plain_url}/v1/rerank", json={**body, "model": "tiny-b"}, timeout=60).json()
    assert alias["model"] == "tiny-b"  # weights 0:1 always pick tiny-b
    assert [r["relevance_score"] for r in alias["results"]] == pytest.approx(
        [r["relevance_score"] for r in direct["results"]], abs=1e-6
    )
    models = httpx.get(f"{serve_url}/v1/models", timeout=30).json()
    assert {m["id"] for m in models["data"]} >= {"tiny", "tiny-b"}
    assert httpx.get(f"{serve_url}/ready", timeout=30).status_code == 200
    for _ in range(6):
        httpx.post(f"{serve_url}/v1/rerank", json={**body, "model": "tiny"}, timeout=60).raise_for_status()
    scrapes = [httpx.get(f"{serve_url}/metrics", timeout=30).text for _ in range(10)]  # each from one replica
    served = [metric_value(text, "rerankd_requests_total", route="/v1/rerank", status="200") for text in scrapes]
    assert max(served) >= 1
    assert all("rerankd_batch_size_bucket" in text for text in scrapes)
    missing = httpx.post(f"{serve_url}/v1/rerank", json={**body, "model": "nope"}, timeout=30)
    assert missing.status_code == 404 and "nope" in missing.text  # the server's own error mapping


def test_a_killed_replica_is_replaced_and_no_request_is_lost(serve_url: str, plain_url: str) -> None:
    import cohere

    docs = [f"the giant panda number {i} eats bamboo in the mountains of china" for i in range(120)]
    want = {r.index: r.relevance_score for r in cohere.ClientV2(api_key="u", base_url=plain_url)
            .rerank(model="tiny", query=QUERY, documents=docs).results}  # fmt: skip
    before = replica_pids()
    assert len(before) == 2
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    stop = time.monotonic() + 12

    def sdk_client() -> None:  # the real SDK: retries a 5xx (its default max_retries=2)
        client = cohere.ClientV2(api_key="u", base_url=serve_url, timeout=120)
        while time.monotonic() < stop:
            got = client.rerank(model="tiny", query=QUERY, documents=docs)
            if {r.index: pytest.approx(r.relevance_score, abs=1e-6) for r in got.results} != want:
                problems.append("sdk: wrong scores")
            outcomes["sdk ok"] += 1

    def raw_client() -> None:  # a client without retries sees every failure as an error status
        with httpx.Client(timeout=120) as client:
            while time.monotonic() < stop:
                response = client.post(
                    f"{serve_url}/v2/rerank", json={"model": "tiny", "query": QUERY, "documents": docs}
                )
                if response.status_code == 200:
                    scores = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
                    if scores != pytest.approx(want, abs=1e-6):
                        problems.append("raw: 200 with wrong scores")
                    outcomes["raw 200"] += 1
                elif response.status_code == 503:  # both tries lost: rerankd's JSON error, never Ray's plain 500
                    body = response.json()
                    if body["error"]["code"] != "replica_lost" or response.headers.get("retry-after") != "1":
                        problems.append(f"raw: 503 without rerankd's body or Retry-After: {response.text[:200]}")
                    outcomes["raw 503"] += 1
                else:
                    problems.append(f"raw: unexpected {response.status_code} {response.text[:200]}")

    def guarded(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a lost request: the test fails below
                problems.append(f"{target.__name__}: {type(exc).__name__}: {exc}")

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (sdk_client, sdk_client, raw_client, raw_client)]
    for thread in threads:
        thread.start()
    time.sleep(4)
    os.kill(before[0], signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=300)
    assert not problems, (problems, outcomes)
    assert outcomes["sdk ok"] > 0 and outcomes["raw 200"] > 0, outcomes
    wait_for(lambda: len(replica_pids()) == 2 and before[0] not in replica_pids(), 180, "a replacement replica")
    after = replica_pids()
    assert before[0] not in after and before[1] in after
    final = cohere.ClientV2(api_key="u", base_url=serve_url).rerank(model="tiny", query=QUERY, documents=docs)
    assert {r.index: r.relevance_score for r in final.results} == pytest.approx(want, abs=1e-6)


def test_cli_serve_ray_hands_off_to_ray_serve(tmp_path: Path, bert_ce: Path) -> None:
    """`rerankd serve --ray local` in its own process (its own Ray instance) answers the cohere SDK."""
    import cohere

    port = free_port()
    exe = str(Path(sys.executable).with_name("rerankd"))
    command = [exe, "serve", "--ray", "local", "-m", f"tiny={bert_ce}", "--port", str(port), "--device", "cpu",
               "--cache", "none"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RERANKD_RAY_NUM_CPUS": "0.5"}
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:

        def ready() -> bool:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 240, "rerankd serve --ray")
        got = cohere.ClientV2(api_key="u", base_url=f"http://127.0.0.1:{port}").rerank(
            model="tiny", query=QUERY, documents=DOCS
        )
        tiny = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
        want = {r.index: r.score for r in tiny.rank(QUERY, DOCS)}
        assert {r.index: r.relevance_score for r in got.results} == pytest.approx(want, abs=1e-6)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        log.close()
