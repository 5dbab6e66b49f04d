"""A real Prometheus (Debian's `prometheus` package) scrapes a live rerankd with deploy/prometheus/prometheus.yml
and the alert rules; its HTTP API then answers the dashboard's own queries. promtool checks and unit-tests the rules."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.conftest import DOCS, QUERY
from tests.deploy.queries import DEPLOY, RULES, all_queries, rule_queries
from tests.server.conftest import RunningServer, free_port
from tests.system_tools import unavailable

pytestmark = pytest.mark.timeout(180)
PROMETHEUS_DIR = DEPLOY / "prometheus"
RATE_BY_ROUTE = "Request rate by route"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (apt-get install -y prometheus)")
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS_DIR)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *(str(path) for path in RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts() -> None:
    # each alert fires on its bad synthetic series, with the expected labels and text, and not on the healthy one
    result = promtool("test", "rules", "tests/rerankd.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config(tmp_path: Path) -> None:
    config = scrape_config("127.0.0.1:8000", interval="15s")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def scrape_config(target: str, interval: str) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with the test's target, intervals and rule paths."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]  # where compose.yaml mounts the rules
    config["rule_files"] = [str(PROMETHEUS_DIR / "rules" / "*.yml")]
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "rerankd" and job["static_configs"] == [{"targets": ["rerankd:8000"]}]
    job["static_configs"] = [{"targets": [target]}]
    return config


@pytest.fixture
def prometheus(live_server: RunningServer, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus scraping ``live_server`` every second; yields its URL."""
    target = live_server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape_config(target, interval="1s")))
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary("prometheus"),
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--log.level=warn",
    ]
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _ok(f"{url}/-/ready"), f"Prometheus ready (log: {tmp_path / 'prometheus.log'})")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _ok(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def instant(prometheus: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert body["status"] == "success", f"{expr}: {body}"
    return list(body["data"]["result"])


def test_real_prometheus_scrapes_rerankd_and_answers_the_dashboard(prometheus: str, live_server: RunningServer) -> None:
    wait_for(lambda: instant(prometheus, 'up{job="rerankd"} == 1'), "the first scrape")
    sent = 6
    with live_server.client() as client:
        for i in range(sent):
            body = {"model": "tiny", "query": f"{QUERY} {i}", "documents": DOCS}
            assert client.post("/v1/rerank", json=body).status_code == 200
    served = live_server.metric("rerankd_requests_total", route="/v1/rerank", status="200")
    assert served >= sent
    # the counter as Prometheus stored it equals the server's own count once a scrape has seen the traffic
    stored = 'rerankd_requests_total{job="rerankd", route="/v1/rerank", status="200"}'
    wait_for(
        lambda: [r for r in instant(prometheus, stored) if float(r["value"][1]) == served], f"{stored} == {served}"
    )
    # the request rate after the traffic, through the dashboard's own query
    (panel_query,) = [q for q in all_queries() if q.where.startswith(f"dashboard: {RATE_BY_ROUTE}")]
    rates = wait_for(
        lambda: {
            r["metric"].get("route"): float(r["value"][1])
            for r in instant(prometheus, panel_query.expr)
            if float(r["value"][1]) > 0
        },
        "a positive request rate",
    )
    assert "/v1/rerank" in rates and rates["/v1/rerank"] > 0
    assert not {"/health", "/ready", "/metrics"} & set(rates)  # probes and scrapes are not API traffic


def panel_values(prometheus: str, title: str, ref_id: str = "A", arm: str = "model") -> dict[tuple[str, str], float]:
    """(route, arm label) -> value of one dashboard query, as the real Prometheus answers it (NaN left out)."""
    (panel_query,) = [q for q in all_queries() if q.where == f"dashboard: {title} [{ref_id}]"]
    return {
        (r["metric"].get("route", ""), r["metric"].get(arm, "")): float(r["value"][1])
        for r in instant(prometheus, panel_query.expr)
        if r["value"][1] != "NaN"
    }


def test_real_prometheus_answers_the_rollout_panels(prometheus: str, live_server: RunningServer) -> None:
    """The rollout row's queries mean what their titles say: route main sends every request to tiny (weight 100 vs
    0), and its online MRR is 0.5 (one satisfied click on the top document, one short click: conftest.drive_rollout)."""
    wait_for(lambda: instant(prometheus, 'up{job="rerankd"} == 1'), "the first scrape")
    with live_server.client() as client:
        for i in range(6):  # traffic the rate window sees
            body = {"model": "main", "query": f"{QUERY} {i}", "documents": DOCS}
            assert client.post("/v1/rerank", json=body).status_code == 200
    split = "A/B split by route: share of requests per arm"
    shares = wait_for(lambda: panel_values(prometheus, split).get(("main", "tiny")), "a share for main -> tiny")
    assert shares == 1.0
    assert panel_values(prometheus, split, "B") == {("main", "tiny"): 1.0, ("main", "tiny-b"): 0.0}
    quality = "Online quality by arm (MRR@k, NDCG@k, CTR@k)"
    assert wait_for(lambda: panel_values(prometheus, quality), "online MRR") == {("main", "tiny"): 0.5}
    assert panel_values(prometheus, quality, "C") == {("main", "tiny"): 0.5}  # CTR: the short click is no click
    shadow = "Shadow agreement by candidate"  # the 6 requests were shadowed by tiny-b (conftest.drive_rollout)
    for ref_id, low in (("A", -1.0), ("C", 0.0)):  # Kendall tau p50, share of requests with the same top document
        values = wait_for(  # (a dict with the key: a value of 0.0 is an answer too)
            lambda ref=ref_id: {
                k: v
                for k, v in panel_values(prometheus, shadow, ref, arm="candidate").items()
                if k == ("main", "tiny-b")
            },
            f"shadow agreement [{ref_id}]",
        )
        assert low <= values["main", "tiny-b"] <= 1.0


def test_real_prometheus_evaluates_every_query_and_rule(prometheus: str) -> None:
    wait_for(lambda: instant(prometheus, 'up{job="rerankd"} == 1'), "the first scrape")
    for query in all_queries():
        instant(prometheus, query.expr)  # a query Prometheus rejects fails here, with the expression

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = [r for r in rules if r.get("health") == "ok" and not r["lastEvaluation"].startswith("0001")]
        return rules if rules and len(evaluated) == len(rules) else None

    rules = wait_for(rules_evaluated, "every rule evaluated with health ok")
    names = {rule["name"] for rule in rules}
    assert names == {q.where.removeprefix("rules: ") for q in all_queries() if q.where.startswith("rules: ")}
    firing = [rule["name"] for rule in rules if rule.get("state") == "firing"]
    assert firing == []  # a healthy server trips no alert
