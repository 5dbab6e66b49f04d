"""deploy/grafana/dashboards/rerankd.json is the output of deploy/grafana/dashboard.py (built with Grafana's own
grafana-foundation-sdk), decodes into the SDK's typed dashboard model unchanged, and shows what operators need."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from tests.deploy.queries import DASHBOARD, DEPLOY, dashboard_queries

pytest.importorskip("grafana_foundation_sdk", reason="pip install -e '.[deploy]'")


def builder() -> Any:
    spec = importlib.util.spec_from_file_location("rerankd_dashboard", DEPLOY / "grafana" / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_committed_json_is_what_the_sdk_builder_makes() -> None:
    assert DASHBOARD.read_text() == builder().render(), "run: python deploy/grafana/dashboard.py"


def test_json_is_a_valid_grafana_dashboard_model(board: dict[str, Any]) -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import prometheus, stat, timeseries
    from grafana_foundation_sdk.models.dashboard import Dashboard, Panel, RowPanel

    register_default_plugins()  # panel options and Prometheus queries decode into their typed models
    model = Dashboard.from_json(board)
    assert json.loads(JSONEncoder(sort_keys=True).encode(model)) == board  # nothing unknown or lost
    assert model.uid == "rerankd-overview" and model.title == "rerankd"
    assert model.panels is not None
    panels = [p for p in model.panels if isinstance(p, Panel)]
    assert len(panels) + sum(isinstance(p, RowPanel) for p in model.panels) == len(model.panels)
    for panel in panels:
        assert panel.type_val in ("timeseries", "stat"), panel.type_val
        assert panel.targets and all(isinstance(t, prometheus.Dataquery) for t in panel.targets), panel.title
        if panel.type_val == "stat":
            assert isinstance(panel.options, stat.Options)
        else:
            assert panel.field_config is not None and panel.field_config.defaults is not None
            assert isinstance(panel.field_config.defaults.custom, timeseries.FieldConfig)


def test_layout_fits_the_grid_without_overlaps(board: dict[str, Any]) -> None:
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))


def test_every_query_uses_the_datasource_variable(board: dict[str, Any]) -> None:
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["name"] == "datasource" and variable["query"] == "prometheus"
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


@pytest.mark.parametrize(
    ("topic", "title_words", "expr_words"),
    [
        ("request rate", "request rate by route", "rate(rerankd_requests_total"),
        ("error rate by status", "errors by status", 'status=~"4..|5.."'),
        ("5xx ratio", "5xx ratio", 'status=~"5.."'),
        ("latency per route", "request latency by route", "histogram_quantile(0.99, sum by (le, route)"),
        ("latency per model", "forward pass by model", "histogram_quantile(0.95, sum by (le, model)"),
        ("queue wait per model", "queue wait by model", "rerankd_queue_seconds_bucket"),
        ("queue depth", "queue depth by model", "rerankd_queue_depth"),
        ("batch fill", "batch fill", "rerankd_batch_size_sum"),
        ("tokens/s", "tokens/s", "rate(rerankd_batch_tokens_sum"),
        ("cache hit ratio", "cache hit ratio", "rerankd_cache_hits_total"),
        ("429s", "429s", 'status="429"'),
        ("A/B split", "a/b split", "rerankd_scored_pairs_total"),
        ("route split per arm", "a/b split by route", "rerankd_route_requests_total"),
        ("route weights", "a/b split by route", "rerankd_route_weight"),
        ("shadow Kendall tau", "shadow agreement", "histogram_quantile(0.5, sum by (le, route, candidate)"),
        ("shadow top-1 overlap", "shadow agreement", 'measure="top1_overlap"'),
        ("shadow done/shed", "shadow scorings", "rerankd_shadow_requests_total"),
        ("feedback events", "feedback events", "rerankd_feedback_events_total"),
        ("unmatched feedback", "feedback events", "rerankd_feedback_unmatched_total"),
        ("online MRR per arm", "online quality by arm", 'measure="mrr"'),
        ("online NDCG per arm", "online quality by arm", 'measure="ndcg"'),
        ("online CTR per arm", "online quality by arm", 'measure="ctr"'),
        ("rank lift per arm", "rank lift by arm", 'measure="rank_lift"'),
        ("dwell per arm", "dwell of clicks by arm", "rerankd_feedback_dwell_seconds_bucket"),
        ("feedback store health", "feedback store", "rerankd_feedback_store_available"),
    ],
)
def test_dashboard_shows(topic: str, title_words: str, expr_words: str) -> None:
    matching = [q for q in dashboard_queries() if title_words in q.where.lower() and expr_words in q.expr]
    assert matching, f"no panel shows {topic}"


def test_the_rollout_row_holds_the_rollout_panels(board: dict[str, Any]) -> None:
    """docs/rollout.md tells users to watch these: they sit under their own row, after every other panel."""
    titles = [panel["title"] for panel in board["panels"]]
    row = titles.index("Rollout: A/B split, shadow, feedback")
    assert board["panels"][row]["type"] == "row"
    assert set(titles[row + 1 :]) == {
        "A/B split by route: share of requests per arm",
        "Shadow agreement by candidate",
        "Shadow scorings/s by outcome",
        "Feedback events/s by arm",
        "Online quality by arm (MRR@k, NDCG@k, CTR@k)",
        "Rank lift by arm",
        "Dwell of clicks by arm (p50/p95/p99)",
        "Feedback store",
    }


def test_latency_panels_show_p50_p95_p99(board: dict[str, Any]) -> None:
    for panel in board["panels"]:
        if "(p50/p95/p99)" in panel.get("title", ""):
            exprs = [t["expr"] for t in panel["targets"]]
            assert [e.split(",")[0] for e in exprs] == [f"histogram_quantile({q}" for q in ("0.5", "0.95", "0.99")]
