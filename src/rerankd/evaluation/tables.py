"""Rich tables for evaluation reports (built here, printed by the CLI) and JSON-safe report dictionaries."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table

from rerankd.evaluation.precision import PrecisionReport
from rerankd.evaluation.quality import QualityReport
from rerankd.evaluation.smoke import SmokeReport

LABEL_CHARS = 24  # inputs are shown shortened so the per-input table fits 80 columns


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has neither), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def _number(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def quality_table(report: QualityReport) -> Table:
    """One row per measure, one column per system (first stage first): fits narrow terminals."""
    title = f"{report.dataset} ({report.split}): {report.n_queries} queries, {report.n_documents} documents"
    table = Table(title=title, caption=f"re-rankers score the first stage's top {report.top_k}")
    table.add_column("measure", no_wrap=True)
    for system in report.systems:
        table.add_column(f"{system.name}\n({system.role})", justify="right", overflow="fold")
    for measure in report.measures:
        best = max(system.means[measure] for system in report.systems)
        cells = [
            f"[bold]{system.means[measure]:.4f}[/]" if system.means[measure] == best else f"{system.means[measure]:.4f}"
            for system in report.systems
        ]
        table.add_row(measure, *cells)
    table.add_row("seconds", *[f"{system.seconds:.1f}" for system in report.systems])
    return table


def comparison_table(report: QualityReport) -> Table:
    table = Table(title=f"A/B on {report.ab_measure}: paired per query")
    table.add_column("A -> B", overflow="fold", ratio=1)
    for column in ("A", "B", "delta", "W/T/L", "p rand.", "p t-test"):
        table.add_column(column, justify="right", no_wrap=True)
    for c in report.comparisons:
        star = "*" if c.significant else ""
        table.add_row(
            f"{c.baseline} -> {c.candidate}",
            f"{c.baseline_mean:.4f}",
            f"{c.candidate_mean:.4f}",
            f"{c.delta:+.4f}",
            f"{c.wins}/{c.ties}/{c.losses}",
            f"{c.p_randomisation:.3g}{star}",
            f"{c.p_ttest:.3g}",
        )
    alpha = report.comparisons[0].alpha if report.comparisons else 0.05
    table.caption = (
        f"W/T/L: queries where B wins/ties/loses against A; p: two-sided paired randomisation and t-tests; "
        f"* significant at {alpha:g}"
    )
    return table


def precision_inputs_table(report: PrecisionReport, limit: int = 20) -> Table:
    """The main per-input numbers, sized for an 80-column terminal (the JSON report has them all)."""
    shown = report.inputs[:limit]
    more = f" (first {limit} of {len(report.inputs)})" if len(report.inputs) > limit else ""
    table = Table(title=f"per input{more}: {report.label_b} against {report.label_a}", box=box.SIMPLE_HEAD)
    table.add_column("#", justify="right")
    table.add_column("input", overflow="fold", max_width=40)
    widths = {"cosine": 8, "MAE": 8, "RMSE": 8, "mean rel": 8, "max rel": 8}
    if report.kind == "scores":
        widths["spearman"] = 8
    for column, width in widths.items():
        table.add_column(column, justify="right", no_wrap=True, min_width=width)  # numbers never wrap
    for number, item in enumerate(shown, start=1):
        s = item.stats
        label = item.label if len(item.label) <= LABEL_CHARS else item.label[: LABEL_CHARS - 1] + "…"
        row = [str(number), label, f"{s.cosine:.6f}", f"{s.mae:.2e}", f"{s.rmse:.2e}"]
        row += [f"{s.mean_relative_error:.3%}", f"{s.max_relative_error:.2%}"]
        if item.agreement is not None:
            row.append(_number(item.agreement.spearman))
        table.add_row(*row)
    return table


def precision_summary_table(report: PrecisionReport) -> Table:
    verdict = "[bold green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    table = Table(title=f"{report.kind}: {verdict}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("pass if", justify="right")
    table.add_column("verdict")
    checked = {check.name: check for check in report.checks}
    o = report.overall
    meaningful = f"mean relative error (|A| >= {report.thresholds.meaningful_fraction:.0%} of spread)"
    rows: list[tuple[str, str]] = [
        ("cosine", f"{o.cosine:.6f}"),
        ("mean per-input cosine", f"{report.mean_input_cosine:.6f}"),
        ("cosine (lowest input)", f"{min(i.stats.cosine for i in report.inputs):.6f}"),
        ("MAE", f"{o.mae:.3e}"),
        ("RMSE", f"{o.rmse:.3e}"),
        ("max abs error", f"{o.max_abs_error:.3e}"),
        ("max error / spread", f"{o.spread_error:.4%}"),
        ("mean relative error (all)", f"{o.mean_relative_error:.4%}"),
        ("max relative error (all)", f"{o.max_relative_error:.4%}"),
        (meaningful, _number(o.mean_relative_error_meaningful, ".4%")),
        ("max relative error (meaningful)", _number(o.max_relative_error_meaningful, ".4%")),
    ]
    table.caption = "PASS rule shared with dtype='auto' (docs/evaluation.md)"
    if report.agreement is not None:
        a = report.agreement
        rows += [("spearman (mean per query)", _number(a.spearman)), ("kendall", _number(a.kendall))]
        rows += [("top-k overlap", _number(a.top_k_overlap, ".3f"))]
        table.caption += f"; ranking agreement: mean over queries; top-k overlap with k = {a.k}"
    for name, value in rows:
        check = checked.get(name)
        if check is None:
            table.add_row(name, value, "", "")
        else:
            ok = "[green]pass[/]" if check.passed else "[red]fail[/]"
            limit = f"{check.threshold:.2%}" if "relative" in name or "spread" in name else f"{check.threshold:g}"
            table.add_row(name, value, f"{check.operator} {limit}", ok)
    return table


def smoke_table(report: SmokeReport) -> Table:
    table = Table(title=f"smoke: {report.model} ({report.family}, {report.device}, {report.dtype})")
    table.add_column("query")
    table.add_column("relevant", justify="right")
    table.add_column("irrelevant", justify="right")
    table.add_column("order")
    for result in report.results:
        verdict = "[green]PASS[/]" if result.passed else "[red]FAIL[/]"
        table.add_row(result.query, f"{result.relevant_score:.4f}", f"{result.irrelevant_score:.4f}", verdict)
    return table


def timing_table(report: SmokeReport) -> Table:
    table = Table(title="performance")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("model load time", f"{report.load_seconds:.2f} s")
    table.add_row("mean latency (1 pair)", f"{report.mean_latency_s:.4f} s")
    table.add_row("throughput (1 pair at a time)", f"{report.throughput_per_s:.2f} pairs/s")
    table.add_row(
        f"throughput ({2 * len(report.results)} pairs per call)", f"{report.batch_throughput_per_s:.2f} pairs/s"
    )
    table.add_row("runs", str(report.repeats))
    return table
