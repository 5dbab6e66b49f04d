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
from tests.server.conftest import metric_value, redis_url  # noqa: F401 (a fixture: one real redis-server)
from tests.server.conftest import serve as serve_plain

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
QUERY = "what is the giant panda bear of china?"
KEY, ADMIN = "ray-test-key-7f3a", "ray-admin-key-91c2"  # must never reach the cluster's stored state
AUTH, ADMIN_AUTH = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {ADMIN}"}
DOCS = ["the giant panda is a bear species of china", "paris is the capital city of france", "hello world"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def serve_url(local_ray: Any, bert_ce: Path, xlmr_ce: Path, redis_url: str) -> Iterator[str]:  # noqa: F811
    """Two replicas (half a CPU each) serving two models and an A/B alias, like `rerankd serve -m ... --route`;
    API and admin keys, feedback in a shared Redis."""
    from ray import serve

    from rerankd.distributed.serve import ServeScaling, build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = Settings(
        models=(f"tiny={bert_ce}", f"tiny-b={xlmr_ce}"), routes=("ab=tiny:0,tiny-b:1",), device="cpu",
        dtype="float32", cache="none", batch_tokens=256, api_key=(KEY,), admin_key=(ADMIN,),
        feedback_store=redis_url,
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
        ray_client, plain = version(api_key=KEY, base_url=serve_url), version(api_key=KEY, base_url=plain_url)
        for model in ("tiny", "tiny-b"):
            got = ray_client.rerank(model=model, query=QUERY, documents=DOCS)
            want = plain.rerank(model=model, query=QUERY, documents=DOCS)
            assert [r.index for r in got.results] == [r.index for r in want.results]
            assert [r.relevance_score for r in got.results] == pytest.approx(
                [r.relevance_score for r in want.results], abs=1e-6
            )


def test_ab_alias_models_list_and_metrics_come_from_the_same_app(serve_url: str, plain_url: str) -> None:
    body = {"model": "ab", "query": QUERY, "documents": DOCS}
    alias = httpx.post(f"{serve_url}/v1/rerank", json=body, headers=AUTH, timeout=60).json()
    direct = httpx.post(f"{plain_url}/v1/rerank", json={**body, "model": "tiny-b"}, timeout=60).json()
    assert alias["model"] == "tiny-b"  # weights 0:1 always pick tiny-b
    assert [r["relevance_score"] for r in alias["results"]] == pytest.approx(
        [r["relevance_score"] for r in direct["results"]], abs=1e-6
    )
    models = httpx.get(f"{serve_url}/v1/models", headers=AUTH, timeout=30).json()
    assert {m["id"] for m in models["data"]} >= {"tiny", "tiny-b"}
    assert httpx.get(f"{serve_url}/ready", timeout=30).status_code == 200
    for _ in range(6):
        tiny = {**body, "model": "tiny"}
        httpx.post(f"{serve_url}/v1/rerank", json=tiny, headers=AUTH, timeout=60).raise_for_status()
    scrapes = [httpx.get(f"{serve_url}/metrics", headers=AUTH, timeout=30).text for _ in range(10)]  # one replica each
    served = [metric_value(text, "rerankd_requests_total", route="/v1/rerank", status="200") for text in scrapes]
    assert max(served) >= 1
    assert all("rerankd_batch_size_bucket" in text for text in scrapes)
    missing = httpx.post(f"{serve_url}/v1/rerank", json={**body, "model": "nope"}, headers=AUTH, timeout=30)
    assert missing.status_code == 404 and "nope" in missing.text  # the server's own error mapping


def test_a_killed_replica_is_replaced_and_no_request_is_lost(serve_url: str, plain_url: str) -> None:
    import cohere

    docs = [f"the giant panda number {i} eats bamboo in the mountains of china" for i in range(120)]
    want = {r.index: r.relevance_score for r in cohere.ClientV2(api_key=KEY, base_url=plain_url)
            .rerank(model="tiny", query=QUERY, documents=docs).results}  # fmt: skip
    before = replica_pids()
    assert len(before) == 2
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    stop = time.monotonic() + 12

    def sdk_client() -> None:  # the real SDK: retries a 5xx (its default max_retries=2)
        client = cohere.ClientV2(api_key=KEY, base_url=serve_url, timeout=120)
        while time.monotonic() < stop:
            got = client.rerank(model="tiny", query=QUERY, documents=docs)
            if {r.index: pytest.approx(r.relevance_score, abs=1e-6) for r in got.results} != want:
                problems.append("sdk: wrong scores")
            outcomes["sdk ok"] += 1

    def raw_client() -> None:  # a client without retries sees every failure as an error status
        with httpx.Client(timeout=120, headers=AUTH) as client:
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
    final = cohere.ClientV2(api_key=KEY, base_url=serve_url).rerank(model="tiny", query=QUERY, documents=docs)
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


def by_replica(url: str, body: dict[str, Any], count: int = 24) -> dict[str, list[httpx.Response]]:
    """``count`` requests, grouped by the scoring replica that answered (``x-rerankd-replica``)."""
    answers: dict[str, list[httpx.Response]] = {}
    with httpx.Client(timeout=60, headers=AUTH) as client:
        for _ in range(count):
            response = client.post(f"{url}/v1/rerank", json=body)
            assert response.status_code == 200, response.text
            answers.setdefault(response.headers["x-rerankd-replica"], []).append(response)
    return answers


def test_credentials_stay_out_of_the_clusters_stored_state(serve_url: str, bert_ce: Path) -> None:
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

    body = {"model": "tiny", "query": QUERY, "documents": DOCS}
    assert httpx.post(f"{serve_url}/v1/rerank", json=body, timeout=60).status_code == 401
    assert httpx.post(f"{serve_url}/v1/rerank", json=body, headers=AUTH, timeout=60).status_code == 200
    assert httpx.get(f"{serve_url}/admin/state", headers=AUTH, timeout=60).status_code == 401
    assert httpx.get(f"{serve_url}/admin/state", headers=ADMIN_AUTH, timeout=60).status_code == 200
    stored = [_internal_kv_get(key, namespace="serve") or b"" for key in _internal_kv_list(b"", namespace="serve")]
    assert any(str(bert_ce).encode() in value for value in stored)  # the deployment args are in there...
    assert not [value for value in stored if KEY.encode() in value or ADMIN.encode() in value]  # ...not the keys


def test_an_admin_change_reaches_every_replica_and_a_replacement(serve_url: str) -> None:
    body = {"model": "ab", "query": QUERY, "documents": DOCS}

    answered: set[str] = set()

    def everywhere(model: str) -> bool:
        answers = by_replica(serve_url, body)
        answered.clear()
        answered.update(answers)
        return len(answers) == 2 and all(r.json()["model"] == model for rs in answers.values() for r in rs)

    wait_for(lambda: everywhere("tiny-b"), 30, "both replicas answering")
    put = httpx.put(f"{serve_url}/admin/routes/ab", json={"weights": {"tiny": 1, "tiny-b": 0}}, headers=ADMIN_AUTH,
                    timeout=60)  # fmt: skip
    assert put.status_code == 200, put.text
    try:
        wait_for(lambda: everywhere("tiny"), 10, "the change on both replicas")  # they sync every second
        before, tags = replica_pids(), set(answered)
        os.kill(before[0], signal.SIGKILL)
        wait_for(lambda: len(replica_pids()) == 2 and before[0] not in replica_pids(), 180, "a replacement replica")
        # the replacement replays the admin log before its first request: it never answers with the old weights
        wait_for(lambda: everywhere("tiny") and bool(answered - tags), 60, "the replacement answering")
    finally:
        httpx.put(f"{serve_url}/admin/routes/ab", json={"weights": {"tiny": 0, "tiny-b": 1}}, headers=ADMIN_AUTH,
                  timeout=60).raise_for_status()  # fmt: skip


def test_feedback_reaches_every_replicas_report(serve_url: str) -> None:
    body = {"model": "ab", "query": QUERY, "documents": DOCS}
    answers = by_replica(serve_url, body, count=12)
    for responses in answers.values():
        for response in responses:
            feedback = {"id": response.headers["x-rerankd-response-id"], "clicked": [0]}
            sent = httpx.post(f"{serve_url}/v1/feedback", json=feedback, headers=AUTH, timeout=60)
            assert sent.status_code == 202, sent.text

    def counted_everywhere() -> bool:
        reports: dict[str, int] = {}
        with httpx.Client(timeout=60, headers=ADMIN_AUTH) as client:
            for _ in range(16):
                response = client.get(f"{serve_url}/admin/report/ab")
                # every arm: a change of weights just before may still be on its way to one replica (<= 1 s)
                reports[response.headers["x-rerankd-replica"]] = sum(arm["events"] for arm in response.json()["arms"])
        return len(reports) == 2 and set(reports.values()) == {12}

    wait_for(counted_everywhere, 15, "every replica's report counting all 12 events")
