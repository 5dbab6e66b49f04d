"""Changing models safely in production, against a live server: weights moved under load, sticky arms, a state
that survives a restart, background model loading whose failure changes nothing, shadow scoring, and online A/B
quality from simulated feedback (arm B ranks the clicked document higher -> higher MRR, significant)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from rerankd import Reranker
from rerankd.cli import app
from tests.server.conftest import RunningServer, ServerFactory
from tests.tiny_models import corpus

pytestmark = pytest.mark.timeout(300)
ADMIN = {"Authorization": "Bearer admin-key"}
QUERY = "what is the giant panda?"
DOCS = corpus(seed=51, n=6, min_words=4, max_words=14)


def start_ab(start_server: ServerFactory, bert: Reranker, xlmr: Reranker, **fields: Any) -> RunningServer:
    return start_server({"a": bert, "b": xlmr}, routes=("main=a:95,b:5",), admin_key=("admin-key",), **fields)


def arm(client: httpx.Client, user: str | None = None, docs: list[str] = DOCS) -> httpx.Response:
    headers = {"x-rerankd-user": user} if user else {}
    answer = client.post("/v1/rerank", json={"model": "main", "query": QUERY, "documents": docs}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-rerankd-model"] == answer.json()["model"]
    return answer


def wait_state(client: httpx.Client, name: str, status: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        state = client.get("/admin/state", headers=ADMIN).json()
        if state["models"].get(name, "").startswith(status):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.05)


def test_weights_move_under_load_and_the_split_follows(
    start_server: ServerFactory, bert: Reranker, xlmr: Reranker
) -> None:
    server = start_ab(start_server, bert, xlmr)
    failures: list[int] = []
    stop = threading.Event()

    def background() -> None:  # traffic that keeps flowing while the weights change
        with server.client() as client:
            while not stop.is_set():
                status = client.post("/v1/rerank", json={"model": "main", "query": QUERY, "documents": DOCS[:2]})
                if status.status_code != 200:
                    failures.append(status.status_code)

    thread = threading.Thread(target=background)
    thread.start()
    try:
        with server.client() as client:
            for weights in ({"a": 50, "b": 50}, {"a": 70, "b": 30}):
                changed = client.put("/admin/routes/main", json={"weights": weights}, headers=ADMIN)
                assert changed.status_code == 200 and changed.json()["routes"]["main"] == weights
            seen = Counter(arm(client, docs=DOCS[:1]).json()["model"] for _ in range(2000))
    finally:
        stop.set()
        thread.join()
    assert not failures
    assert abs(seen["a"] / 2000 - 0.70) <= 0.03, seen
    assert server.metric("rerankd_route_weight", route="main", model="b") == pytest.approx(0.3)
    assert server.metric("rerankd_admin_changes_total", kind="route") == 2


def test_sticky_users_see_one_arm_and_only_cross_when_weights_move(
    start_server: ServerFactory, bert: Reranker, xlmr: Reranker
) -> None:
    server = start_ab(start_server, bert, xlmr)
    users = [f"user-{i}" for i in range(60)]
    with server.client() as client:
        before = {u: arm(client, u, DOCS[:1]).json()["model"] for u in users}
        again = {u: arm(client, u, DOCS[:1]).json()["model"] for u in users}
        client.put("/admin/routes/main", json={"weights": {"a": 50, "b": 50}}, headers=ADMIN)
        after = {u: arm(client, u, DOCS[:1]).json()["model"] for u in users}
    assert before == again
    assert all(after[u] == "b" for u in users if before[u] == "b")  # moving weight to b only moves users a -> b
    assert 10 <= sum(v == "b" for v in after.values()) <= 50


def test_admin_api_needs_its_own_key_and_is_off_without_one(
    start_server: ServerFactory, bert: Reranker, xlmr: Reranker
) -> None:
    server = start_ab(start_server, bert, xlmr, api_key=("api-key",))
    off = start_server({"a": bert})
    with server.client() as client:
        assert client.get("/admin/state").status_code == 401
        assert client.get("/admin/state", headers={"Authorization": "Bearer api-key"}).status_code == 401
        assert client.get("/admin/state", headers=ADMIN).status_code == 200
    with off.client() as client:
        assert client.get("/admin/state", headers=ADMIN).json()["error"]["code"] == "admin_off"


def test_state_survives_a_restart_and_a_failed_load_changes_nothing(
    start_server: ServerFactory, bert: Reranker, xlmr: Reranker, bert_ce: Path, tmp_path: Path
) -> None:
    state_file = tmp_path / "state.json"
    first = start_ab(start_server, bert, xlmr, state_file=str(state_file))
    with first.client() as client:
        client.post("/admin/models", json={"name": "broken", "path": str(tmp_path / "nothing")}, headers=ADMIN)
        failed = wait_state(client, "broken", "failed")
        assert failed["routes"]["main"] == {"a": 95.0, "b": 5.0}
        arm(client)  # traffic as it was
        loaded = client.post("/admin/models", json={"name": "c", "path": str(bert_ce)}, headers=ADMIN)
        assert loaded.status_code == 202 and loaded.json()["models"]["c"] == "loading"
        wait_state(client, "c", "ready")
        client.put("/admin/routes/main", json={"weights": {"a": 20, "c": 80}}, headers=ADMIN)
        client.put("/admin/shadows/main", json={"candidate": "b", "fraction": 0.25}, headers=ADMIN)
    saved = json.loads(state_file.read_text())
    assert saved["routes"]["main"] == {"a": 20.0, "c": 80.0} and saved["added_models"] == {"c": str(bert_ce)}
    second = start_ab(start_server, bert, xlmr, state_file=str(state_file))
    with second.client() as client:
        state = client.get("/admin/state", headers=ADMIN).json()
        assert state["routes"]["main"] == {"a": 20.0, "c": 80.0}
        assert state["models"]["c"] == "ready" and state["shadows"]["main"]["fraction"] == 0.25
        assert {arm(client).json()["model"] for _ in range(40)} <= {"a", "c"}
        refused = client.delete("/admin/models/c", headers=ADMIN)
        assert refused.status_code == 400 and "set its weight to 0" in refused.json()["message"]


def test_shadow_scores_off_the_response_path_and_records_agreement(
    start_server: ServerFactory, bert: Reranker, xlmr: Reranker, tmp_path: Path
) -> None:
    server = start_ab(start_server, bert, xlmr)
    log = tmp_path / "shadow.jsonl"
    with server.client() as client:
        client.put("/admin/routes/main", json={"weights": {"a": 100, "b": 0}}, headers=ADMIN)
        client.put("/admin/shadows/main", json={"candidate": "b", "fraction": 1.0, "log": str(log)}, headers=ADMIN)
        served = [arm(client).json() for _ in range(20)]
    assert all(answer["model"] == "a" for answer in served)  # the shadow never answers
    deadline = time.monotonic() + 30
    while server.metric("rerankd_shadow_requests_total", route="main", candidate="b", outcome="done") < 20:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert server.metric("rerankd_shadow_agreement_count", route="main", model="a", measure="kendall_tau") == 20
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 20 and {r["served"] for r in records} == {"a"}
    want_a = [i for i, _ in sorted(enumerate(bert.score([(QUERY, d) for d in DOCS])), key=lambda x: -x[1])]
    want_b = [i for i, _ in sorted(enumerate(xlmr.score([(QUERY, d) for d in DOCS])), key=lambda x: -x[1])]
    assert records[0]["served_order"] == want_a and records[0]["candidate_order"] == want_b


def test_feedback_gives_the_better_arm_a_higher_mrr_and_a_significant_report(
    start_server: ServerFactory, bert: Reranker, xlmr: Reranker
) -> None:
    """Simulated users always click the document arm b ranks first: b's MRR is 1, a's lower, and the report says
    the difference is significant (permutation test) — through the HTTP API and the `rerankd admin report` CLI."""
    server = start_ab(start_server, bert, xlmr)
    docs = corpus(seed=52, n=8, min_words=4, max_words=14)
    with server.client() as client:
        client.put("/admin/routes/main", json={"weights": {"a": 50, "b": 50}}, headers=ADMIN)
        for i in range(160):
            query = f"{QUERY} {i}"
            wanted = max(range(len(docs)), key=lambda j: xlmr.score([(query, docs[j])])[0])
            answer = client.post("/v1/rerank", json={"model": "main", "query": query, "documents": docs},
                                 headers={"x-rerankd-user": f"u{i}"}).json()  # fmt: skip
            given = client.post("/v1/feedback", json={"id": answer["id"], "clicked": [wanted]})
            assert given.status_code == 202 and given.json()["model"] == answer["model"]
        report = client.get("/admin/report/main?baseline=a", headers=ADMIN).json()
        unknown = client.post("/v1/feedback", json={"id": "rerank-unknown", "clicked": [0]})
    means = {arm_["arm"]: arm_["means"] for arm_ in report["arms"]}
    assert means["b"]["mrr"] == pytest.approx(1.0) and means["a"]["mrr"] < 0.8
    comparison = report["comparisons"][0]
    assert comparison["candidate"] == "b" and comparison["significant"] and comparison["p_randomisation"] < 0.01
    assert unknown.status_code == 404
    assert server.metric("rerankd_feedback_events_total", route="main") == 160
    cli = CliRunner().invoke(app, ["admin", "--url", server.url, "--key", "admin-key", "report", "main"])
    assert cli.exit_code == 0 and "significant" in cli.output and "MRR@k" in cli.output


def test_admin_cli_changes_weights(start_server: ServerFactory, bert: Reranker, xlmr: Reranker) -> None:
    server = start_ab(start_server, bert, xlmr)
    runner = CliRunner()
    base = ["admin", "--url", server.url, "--key", "admin-key"]
    changed = runner.invoke(app, [*base, "route", "main", "--set", "a=50,b=50"])
    assert changed.exit_code == 0 and "50%" in changed.output
    refused = runner.invoke(app, [*base, "route", "main", "--set", "a=50,zzz=50"])
    assert refused.exit_code == 2 and "not served here: zzz" in refused.output
    wrong_key = runner.invoke(app, ["admin", "--url", server.url, "--key", "nope", "state"])
    assert wrong_key.exit_code == 2 and "401" in wrong_key.output
