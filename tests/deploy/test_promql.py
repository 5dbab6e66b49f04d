"""Every PromQL expression of the Grafana dashboard and the alert rules reads series the server really exports:
parsed with promql-parser, compared with the /metrics of a live server that has served every kind of request.
Generic on purpose: new panels and new metrics are checked without touching this file."""

from __future__ import annotations

import pytest

from tests.deploy.queries import (
    Query,
    all_queries,
    dashboard_queries,
    dashboard_variable_metrics,
    reads,
    recorded_series,
    rule_queries,
    unknown_references,
)

pytestmark = pytest.mark.timeout(120)
pytest.importorskip("promql_parser", reason="pip install -e '.[deploy]'")


def test_the_checked_expressions_are_all_there() -> None:
    # a parser that found nothing would make every other test here pass vacuously
    assert len(dashboard_queries()) >= 20
    assert {q.where for q in rule_queries()} >= {
        "rules: RerankdHighErrorRate",
        "rules: RerankdHighLatencyP99",
        "rules: RerankdQueueSaturated",
        "rules: RerankdNotReady",
    }


@pytest.mark.parametrize("query", all_queries(), ids=lambda q: q.where)
def test_expression_parses_and_reads_rerankd_series(query: Query) -> None:
    found = reads(query.expr)
    assert found.metrics, f"{query.where} reads no metric"
    assert all(m.startswith("rerankd") or m == "up" for m in found.metrics), found.metrics


@pytest.mark.parametrize("query", all_queries(), ids=lambda q: q.where)
def test_every_metric_and_label_is_exported(query: Query, exported: dict[str, set[str]]) -> None:
    assert unknown_references(query.expr, exported, recorded_series()) == [], query.expr


def test_dashboard_variables_read_exported_labels(exported: dict[str, set[str]]) -> None:
    variables = dashboard_variable_metrics()
    assert "model" in variables
    for name, (metric, label) in variables.items():
        assert label in exported.get(metric, set()), f"variable {name}: {metric} has no label {label}"


def test_the_check_catches_a_wrong_metric_or_label(exported: dict[str, set[str]]) -> None:
    good = 'sum by (route) (rate(rerankd_requests_total{status="200"}[5m]))'
    assert unknown_references(good, exported, set()) == []
    misspelt = unknown_references(good.replace("requests_total", "request_total"), exported, set())
    assert misspelt == ["metric rerankd_request_total", "label route", "label status"]
    assert unknown_references(good.replace("by (route)", "by (model)"), exported, set()) == ["label model"]
    quantile = "histogram_quantile(0.9, sum by (le) (rate(rerankd_queue_seconds_bucket[5m])))"
    assert unknown_references(quantile, exported, set()) == []  # `le` is a bucket's label
