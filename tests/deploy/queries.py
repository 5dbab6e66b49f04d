"""Every PromQL expression that deploy/ ships (Grafana dashboard, alert and recording rules), and what they read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rerankd.json"
RULES = sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))
# What Grafana substitutes before a query reaches Prometheus (the test's choices of values).
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$model": ".*", "${datasource}": "prometheus"}
# Series Prometheus makes itself, and the labels it adds to every scraped series; `le` belongs to histogram buckets.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = {"job", "instance"}
LABEL_VALUES = re.compile(r"^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$")


@dataclass
class Reads:
    """The series names and label names one expression reads."""

    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Query:
    where: str  # e.g. "dashboard: Request rate by route [A]" or "rules: RerankdHighErrorRate"
    expr: str  # as Prometheus receives it (Grafana variables substituted)


def grafana_expr(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[Query]:
    board = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    out = []
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            out.append(Query(f"dashboard: {panel.get('title')} [{target.get('refId')}]", grafana_expr(target["expr"])))
    return out


def dashboard_variable_metrics(dashboard: dict[str, Any] | None = None) -> dict[str, tuple[str, str]]:
    """``label_values(metric, label)`` template variables: name -> (metric, label)."""
    board = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    out = {}
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"] if isinstance(variable["query"], str) else variable["query"]["query"]
            match = LABEL_VALUES.match(query.strip())
            assert match, f"variable {variable['name']}: unsupported query {query!r}"
            out[variable["name"]] = (match.group(1), match.group(2))
    return out


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


def rule_queries() -> list[Query]:
    out = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append(Query(f"rules: {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return out


def recorded_series() -> set[str]:
    return {
        rule["record"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def all_queries() -> list[Query]:
    return dashboard_queries() + rule_queries()


def reads(expr: str) -> Reads:
    import promql_parser

    out = Reads()
    _walk(promql_parser.parse(expr), out)
    return out


def _walk(node: Any, out: Reads) -> None:
    kind = type(node).__name__
    if kind == "VectorSelector":
        if node.name:
            out.metrics.add(node.name)
        for matcher in [*node.matchers.matchers, *(m for group in node.matchers.or_matchers for m in group)]:
            if matcher.name == "__name__":
                out.metrics.add(matcher.value)
            else:
                out.labels.add(matcher.name)
        return
    if kind == "AggregateExpr" and node.modifier is not None:
        out.labels.update(node.modifier.labels)
    if kind == "BinaryExpr" and node.modifier is not None:
        if node.modifier.matching is not None:
            out.labels.update(node.modifier.matching.labels)
        out.labels.update(node.modifier.group_labels or [])
    for child in ("lhs", "rhs", "expr", "param", "vector_selector"):
        value = getattr(node, child, None)
        if value is not None and not isinstance(value, (str, int, float)):
            _walk(value, out)
    for arg in getattr(node, "args", None) or []:
        _walk(arg, out)


def unknown_references(expr: str, exported: dict[str, set[str]], recorded: set[str]) -> list[str]:
    """What ``expr`` reads that no exported series has: ``exported`` maps each sample name the server exports to
    the label names seen on it. Empty when every metric exists and every label is on one of the metrics read."""
    found = reads(expr)
    problems = [
        f"metric {name}"
        for name in sorted(found.metrics)
        if name not in exported and name not in recorded and name not in PROMETHEUS_SERIES
    ]
    known = set(TARGET_LABELS)
    for name in found.metrics:
        known |= exported.get(name, set())
        if name.endswith("_bucket"):
            known.add("le")
        if name in recorded or name in PROMETHEUS_SERIES:
            return problems  # labels of recorded or synthetic series are not the server's to check
    problems += [f"label {label}" for label in sorted(found.labels - known)]
    return problems
