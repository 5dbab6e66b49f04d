"""Builds deploy/grafana/dashboards/rerankd.json with Grafana's own grafana-foundation-sdk (never edited by hand).

    python deploy/grafana/dashboard.py            # rewrite the JSON
    python deploy/grafana/dashboard.py --check    # exit 1 when the JSON differs from what this file builds

Every query reads a metric of src/rerankd/server/metrics.py; tests/deploy/test_promql.py checks that against a live
server, and tests/deploy/test_dashboard.py that the JSON is what this file builds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import cast

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef, VariableRefresh

OUTPUT = Path(__file__).parent / "dashboards" / "rerankd.json"
UID = "rerankd-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
API = 'route!~"/health|/ready|/metrics"'  # probes and scrapes are not API traffic
MODEL = 'model=~"$model"'
QUANTILES = (0.5, 0.95, 0.99)
AGREEMENT = ("kendall_tau", "rbo", "top1_overlap", "top5_overlap")  # rerankd.server.admin.agreement's measures


def query(expr: str, legend: str, ref_id: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def quantile_queries(metric: str, label: str, selector: str) -> list[prometheus.Dataquery]:
    """p50/p95/p99 of a histogram, one series per ``label`` value."""
    return [
        query(
            f"histogram_quantile({q}, sum by (le, {label}) (rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"{{{{{label}}}}} p{round(q * 100)}",
            ref_id=chr(ord("A") + i),
        )
        for i, q in enumerate(QUANTILES)
    ]


def graph(
    title: str, unit: str, queries: list[prometheus.Dataquery], description: str, width: int = 12
) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
    panel = panel.height(8).span(width).fill_opacity(10).line_width(1)
    return panel.targets(cast("list[Builder[Dataquery]]", queries))


def single(title: str, unit: str, expr: str, description: str) -> stat.Panel:
    panel = stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE).height(4).span(6)
    panel = panel.graph_mode(common.BigValueGraphMode.AREA).color_mode(common.BigValueColorMode.VALUE)
    reduce = common_builders.ReduceDataOptions().calcs(["lastNotNull"])
    return panel.reduce_options(reduce).targets(cast("list[Builder[Dataquery]]", [query(expr, "")]))


def headline() -> list[stat.Panel]:
    api = f"sum(rate(rerankd_requests_total{{{API}}}[{RATE}]))"
    return [
        single("API requests/s", "reqps", api, "Requests to the API routes (not probes or scrapes)."),
        single(
            "5xx ratio",
            "percentunit",
            f'sum(rate(rerankd_requests_total{{{API}, status=~"5.."}}[{RATE}])) / {api}',
            "Share of API requests answered with a server error.",
        ),
        single(
            "429s/s",
            "reqps",
            f'sum(rate(rerankd_requests_total{{status="429"}}[{RATE}]))',
            "Requests refused because a model's queue was full or timed out (Retry-After sent).",
        ),
        single(
            "Pairs queued",
            "short",
            f"sum(rerankd_queue_depth{{{MODEL}}})",
            "Pairs waiting for a forward pass, all models.",
        ),
    ]


def traffic() -> list[timeseries.Panel]:
    return [
        graph(
            "Request rate by route",
            "reqps",
            [query(f"sum by (route) (rate(rerankd_requests_total{{{API}}}[{RATE}]))", "{{route}}")],
            "HTTP requests per second to each API route.",
        ),
        graph(
            "Errors by status",
            "reqps",
            [query(f'sum by (status) (rate(rerankd_requests_total{{status=~"4..|5.."}}[{RATE}]))', "{{status}}")],
            "4xx and 5xx answers per second, by status code.",
        ),
        graph(
            "429s and refusals",
            "reqps",
            [
                query(f'sum by (route) (rate(rerankd_requests_total{{status="429"}}[{RATE}]))', "429 {{route}}"),
                query(
                    f"sum by (model, reason) (rate(rerankd_rejections_total{{{MODEL}}}[{RATE}]))",
                    "{{model}} {{reason}}",
                    ref_id="B",
                ),
                query(
                    f"sum by (model) (rate(rerankd_dropped_items_total{{{MODEL}}}[{RATE}]))",
                    "{{model}} dropped pairs",
                    ref_id="C",
                ),
            ],
            "429 answers by route; queue refusals and timeouts by model; queued pairs dropped (client gone).",
        ),
        graph(
            "A/B split: pairs computed by model",
            "percentunit",
            [query(f"sum by (model) (rate(rerankd_scored_pairs_total{{{MODEL}}}[{RATE}]))", "{{model}}")],
            "Share of the computed pairs each model took: the realised split of weighted --route aliases "
            "(stacked to 100%; cache hits are not counted).",
        ).stacking(common_builders.StackingConfig().mode(common.StackingMode.PERCENT)),
    ]


def latency() -> list[timeseries.Panel]:
    return [
        graph(
            "Request latency by route (p50/p95/p99)",
            "s",
            quantile_queries("rerankd_request_seconds", "route", API),
            "End-to-end HTTP latency, from the first byte in to the last byte out.",
            width=24,
        ),
        graph(
            "Queue wait by model (p50/p95/p99)",
            "s",
            quantile_queries("rerankd_queue_seconds", "model", MODEL),
            "Time a request waited for its first forward pass.",
        ),
        graph(
            "Forward pass by model (p50/p95/p99)",
            "s",
            quantile_queries("rerankd_batch_seconds", "model", MODEL),
            "Time of one batched forward pass.",
        ),
    ]


def batching() -> list[timeseries.Panel]:
    def ratio(metric_a: str, metric_b: str) -> str:
        per_model = "sum by (model) (rate({}{{" + MODEL + "}}[" + RATE + "]))"
        return f"{per_model.format(metric_a)} / {per_model.format(metric_b)}"

    hits = f"sum by (model) (rate(rerankd_cache_hits_total{{{MODEL}}}[{RATE}]))"
    misses = f"sum by (model) (rate(rerankd_cache_misses_total{{{MODEL}}}[{RATE}]))"
    return [
        graph(
            "Queue depth by model",
            "short",
            [query(f"sum by (model) (rerankd_queue_depth{{{MODEL}}})", "{{model}}")],
            "Pairs waiting for a forward pass; at --max-queue new requests get 429.",
        ),
        graph(
            "Tokens/s by model",
            "short",
            [
                query(f"sum by (model) (rate(rerankd_batch_tokens_sum{{{MODEL}}}[{RATE}]))", "{{model}} real"),
                query(
                    f"sum by (model) (rate(rerankd_batch_padded_tokens_sum{{{MODEL}}}[{RATE}]))",
                    "{{model}} padded",
                    ref_id="B",
                ),
            ],
            "Real and padded tokens through the model per second.",
        ),
        graph(
            "Batch fill by model",
            "short",
            [query(ratio("rerankd_batch_size_sum", "rerankd_batch_size_count"), "{{model}} rows/batch")],
            "Average rows per forward pass: near 1 under light load, larger when requests share batches.",
        ),
        graph(
            "Padding efficiency by model",
            "percentunit",
            [query(ratio("rerankd_batch_tokens_sum", "rerankd_batch_padded_tokens_sum"), "{{model}}")],
            "Real tokens over padded tokens per forward pass (1 = no padding waste).",
        ),
        graph(
            "Score cache hit ratio by model",
            "percentunit",
            [query(f"{hits} / ({hits} + {misses})", "{{model}}")],
            "Pairs answered from the score cache over all pairs looked up.",
        ),
        graph(
            "Pairs computed/s by model",
            "short",
            [query(f"sum by (model) (rate(rerankd_scored_pairs_total{{{MODEL}}}[{RATE}]))", "{{model}}")],
            "Pairs (or texts, for embeddings) computed by each model per second.",
        ),
    ]


def rollout() -> list[timeseries.Panel]:
    """Changing models safely (docs/rollout.md): the realised A/B split, shadow agreement and outcomes, feedback and
    each arm's online quality."""

    def per_arm(expr: str) -> str:
        return f"sum by (route, model) ({expr})"

    routed = f"rate(rerankd_route_requests_total{{{MODEL}}}[{RATE}])"
    everything = f"sum by (route) (rate(rerankd_route_requests_total[{RATE}]))"

    def agreement(measure: str, ref_id: str) -> prometheus.Dataquery:
        """The median of one agreement measure; for top-1 overlap (0 or 1) the share of requests whose top document
        agrees. (The histogram has no _sum: Kendall tau can be negative, so prometheus_client leaves it out.)"""
        selector = f'{MODEL}, measure="{measure}"'
        if measure == "top1_overlap":
            below_one = f'rate(rerankd_shadow_agreement_bucket{{{selector}, le="0.99"}}[{RATE}])'
            total = f"rate(rerankd_shadow_agreement_count{{{selector}}}[{RATE}])"
            share = f"1 - sum by (route, candidate) ({below_one}) / sum by (route, candidate) ({total})"
            return query(share, "{{route}} {{candidate}} top-1 agrees (share)", ref_id)
        expr = (
            "histogram_quantile(0.5, sum by (le, route, candidate) "
            f"(rate(rerankd_shadow_agreement_bucket{{{selector}}}[{RATE}])))"
        )
        return query(expr, f"{{{{route}}}} {{{{candidate}}}} {measure} p50", ref_id)

    def online(measure: str, ref_id: str) -> prometheus.Dataquery:
        value = per_arm(f'rerankd_feedback_value_sum{{{MODEL}, measure="{measure}"}}')
        events = per_arm(f"rerankd_feedback_events_total{{{MODEL}}}")
        return query(f"{value} / {events}", f"{{{{route}}}} {{{{model}}}} {measure}", ref_id)

    return [
        graph(
            "A/B split by route: share of requests per arm",
            "percentunit",
            [
                query(f"{per_arm(routed)} / on (route) group_left {everything}", "{{route}} → {{model}}"),
                query(f"avg by (route, model) (rerankd_route_weight{{{MODEL}}})", "{{route}} → {{model}} weight", "B"),
            ],
            "Requests each arm of a weighted route answered, as a share of the route's requests, next to the "
            "configured weight: the two lines of an arm should meet (sticky users make small routes lumpy).",
        ),
        graph(
            "Shadow agreement by candidate",
            "short",
            [agreement(m, ref) for m, ref in zip(AGREEMENT, "ABCD", strict=True)],
            "How far the shadow candidate's ranking agrees with the served one: median Kendall tau, rank-biased "
            "overlap and top-5 overlap, and the share of requests whose top document is the same. Near 1: the "
            "candidate changes little; near 0: look before shipping.",
        ),
        graph(
            "Shadow scorings/s by outcome",
            "reqps",
            [
                query(
                    f"sum by (candidate, outcome) (rate(rerankd_shadow_requests_total{{{MODEL}}}[{RATE}]))",
                    "{{candidate}} {{outcome}}",
                )
            ],
            "Shadow scorings done, shed (dropped first when queues fill: no idle capacity for the candidate) and "
            "failed.",
        ),
        graph(
            "Feedback events/s by arm",
            "reqps",
            [
                query(per_arm(f"rate(rerankd_feedback_events_total{{{MODEL}}}[{RATE}])"), "{{route}} {{model}}"),
                query(
                    per_arm(f"rate(rerankd_feedback_short_clicks_total{{{MODEL}}}[{RATE}])"),
                    "{{route}} {{model}} short clicks",
                    "B",
                ),
                query(f"sum(rate(rerankd_feedback_unmatched_total[{RATE}]))", "unknown or expired id", "C"),
            ],
            "POST /v1/feedback joined with a served ranking, per arm; clicks under the dwell threshold; feedback "
            "whose response id was unknown or expired.",
        ),
        graph(
            "Online quality by arm (MRR@k, NDCG@k, CTR@k)",
            "short",
            [online("mrr", "A"), online("ndcg", "B"), online("ctr", "C")],
            "Mean per feedback event since the replicas started (satisfied clicks only). "
            "`rerankd admin report` adds the significance test and the events a decision needs.",
        ),
        graph(
            "Rank lift by arm",
            "short",
            [online("rank_lift", "A")],
            "Places reranking moved the clicked documents up from the first stage's order, mean per event.",
        ),
        graph(
            "Dwell of clicks by arm (p50/p95/p99)",
            "s",
            quantile_queries("rerankd_feedback_dwell_seconds", "model", MODEL),
            "Reported dwell of clicked documents: an arm whose dwell falls while its CTR rises wins clicks, not "
            "readers.",
        ),
        graph(
            "Feedback store",
            "short",
            [
                query("min by (backend) (rerankd_feedback_store_available)", "{{backend}} available"),
                query(
                    f"sum by (backend) (rate(rerankd_feedback_store_dropped_total[{RATE}]))",
                    "{{backend}} rankings dropped/s",
                    "B",
                ),
                query(
                    f"sum by (backend, op) (rate(rerankd_feedback_store_errors_total[{RATE}]))",
                    "{{backend}} {{op}} errors/s",
                    "C",
                ),
            ],
            "Where served rankings wait for feedback (memory, or a Redis replicas share): 0 = unreachable, "
            "feedback answers 503 and rankings served meanwhile get none.",
        ),
    ]


def build() -> dict[str, object]:
    datasource = db.DatasourceVariable("datasource").label("Data source").type("prometheus")
    model = (
        db.QueryVariable("model")
        .label("Model")
        .query("label_values(rerankd_queue_depth, model)")
        .datasource(DATASOURCE)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    board = (
        db.Dashboard("rerankd")
        .uid(UID)
        .description("rerankd: traffic, errors, latency, queues, batching, cache, A/B split, shadow and feedback")
        .tags(["rerankd"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource)
        .with_variable(model)
    )
    sections: list[tuple[str, list[stat.Panel] | list[timeseries.Panel]]] = [
        ("Overview", headline()),
        ("Traffic and errors", traffic()),
        ("Latency", latency()),
        ("Queues, batching, cache", batching()),
        ("Rollout: A/B split, shadow, feedback", rollout()),
    ]
    ids = iter(range(1, 1000))
    for title, panels in sections:  # the SDK lays the panels out left to right, row by row (widths add up to 24)
        board = board.with_row(db.Row(title).id(next(ids)))
        for panel in panels:
            board = board.with_panel(panel.id(next(ids)))
    built: dict[str, object] = json.loads(JSONEncoder(sort_keys=True).encode(board.build()))
    return built


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
