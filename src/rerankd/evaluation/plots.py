"""PNG plots of evaluation reports, drawn with matplotlib's Agg canvas (no display, no pyplot global state)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rerankd.evaluation.dependencies import import_eval_module
from rerankd.evaluation.precision import PrecisionReport
from rerankd.evaluation.quality import QualityReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120


def _figure(width: float, height: float, columns: int) -> tuple[Figure, list[Axes]]:
    figure_module = import_eval_module("matplotlib.figure", "plotting")
    agg = import_eval_module("matplotlib.backends.backend_agg", "plotting")
    figure = figure_module.Figure(figsize=(width, height), layout="constrained")
    agg.FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Figure, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=DPI, format="png")
    return target


def _metric_bars(axes: Axes, report: QualityReport) -> None:
    measures = list(report.measures)
    positions = np.arange(len(measures))
    width = 0.8 / len(report.systems)
    for index, system in enumerate(report.systems):
        values = [system.means[m] for m in measures]
        offset = (index - (len(report.systems) - 1) / 2) * width
        bars = axes.bar(positions + offset, values, width, label=f"{system.name} ({system.role})")
        if len(report.systems) <= 3:
            axes.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    axes.set_xticks(positions, measures, rotation=30, ha="right")
    axes.set_ylim(0, 1.35)
    axes.set_ylabel("mean over queries")
    axes.set_title(f"{report.dataset} ({report.split}): {report.n_queries} queries, top-{report.top_k} re-ranked")
    axes.legend(fontsize=8, loc="upper center", ncol=min(3, len(report.systems)))
    axes.grid(axis="y", alpha=0.3)


def _per_query_deltas(axes: Axes, report: QualityReport) -> None:
    baseline = report.systems[0]
    measure = report.ab_measure
    axes.axhline(0.0, color="black", linewidth=0.8)
    others = report.systems[1:]
    for system in others:
        qids = [qid for qid in baseline.per_query if qid in system.per_query]
        deltas = sorted((system.per_query[q][measure] - baseline.per_query[q][measure] for q in qids), reverse=True)
        comparison = next(c for c in report.comparisons if c.baseline == baseline.name and c.candidate == system.name)
        label = (
            f"{system.name}: W/T/L {comparison.wins}/{comparison.ties}/{comparison.losses}, "
            f"p={comparison.p_randomisation:.3g}"
        )
        xs = np.arange(1, len(deltas) + 1)
        if len(others) == 1:
            colors = ["tab:green" if d > 0 else "tab:red" for d in deltas]
            axes.bar(xs, deltas, width=1.0, color=colors, label=label)
        else:
            axes.plot(xs, deltas, marker="o", markersize=3, drawstyle="steps-mid", label=label)
    axes.set_xlabel("queries, sorted by delta")
    axes.set_ylabel(f"{measure} minus {baseline.name}")
    axes.set_title(f"per-query {measure} change over {baseline.name}")
    if others:
        axes.legend(fontsize=8)
    else:
        axes.text(0.5, 0.5, "no re-ranker to compare", ha="center", transform=axes.transAxes)
    axes.grid(alpha=0.3)


def plot_quality(report: QualityReport, path: str | Path) -> Path:
    """Metric bars per system (left) and sorted per-query deltas of each re-ranker over the first stage (right)."""
    figure, (bars, deltas) = _figure(13, 5, 2)
    _metric_bars(bars, report)
    _per_query_deltas(deltas, report)
    return _save(figure, path)


def _scatter(axes: Axes, a: np.ndarray, b: np.ndarray, report: PrecisionReport) -> None:
    size = 6 if a.size > 2000 else 16
    axes.scatter(a, b, s=size, alpha=0.6, edgecolors="none")
    low, high = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    margin = (high - low) * 0.03 or 0.01
    axes.plot([low - margin, high + margin], [low - margin, high + margin], color="gray", linewidth=0.8, label="y = x")
    verdict = "PASS" if report.passed else "FAIL"
    stats = report.overall
    axes.set_title(f"{verdict}: cosine {stats.cosine:.6f}, MAE {stats.mae:.3g}, RMSE {stats.rmse:.3g}", fontsize=10)
    axes.set_xlabel(report.label_a)
    axes.set_ylabel(report.label_b)
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(alpha=0.3)


def _relative_errors(axes: Axes, a: np.ndarray, b: np.ndarray, report: PrecisionReport) -> None:
    """Relative error against |A| on log-log axes: where it explodes, the reference is near zero."""
    magnitude = np.abs(a)
    relative = np.abs(b - a) / np.maximum(magnitude, 1e-12)
    axes.scatter(np.maximum(magnitude, 1e-12), np.maximum(relative, 1e-9), s=8, alpha=0.5, edgecolors="none")
    floor = report.thresholds.meaningful_fraction * float(np.ptp(a))
    limit = report.thresholds.max_relative_error
    label = f"meaningful: |A| >= {report.thresholds.meaningful_fraction:.0%} of spread = {floor:.3g}"
    axes.axvline(max(floor, 1e-12), color="tab:orange", linewidth=1.0, label=label)
    axes.axhline(limit, color="tab:red", linewidth=1.0, linestyle="--", label=f"mean rel. error limit {limit:.0%}")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("|A|")
    axes.set_ylabel("|B - A| / |A|  (exact zeros at 1e-9)")
    active = report.overall.mean_relative_error_meaningful
    active_text = "-" if active is None else f"{active:.4%}"
    axes.set_title(
        f"relative error: mean {report.overall.mean_relative_error:.4%} (all), {active_text} (meaningful)", fontsize=10
    )
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)


def plot_precision(report: PrecisionReport, path: str | Path) -> Path:
    """Scatter of B's values against A's with the y = x line (left) and absolute error against |A| (right)."""
    a = np.asarray(report.values_a, dtype=np.float64)
    b = np.asarray(report.values_b, dtype=np.float64)
    figure, (scatter, errors) = _figure(11, 5, 2)
    _scatter(scatter, a, b, report)
    _relative_errors(errors, a, b, report)
    figure.suptitle(f"{report.kind}: {len(report.inputs)} inputs, {a.size} values", fontsize=11)
    return _save(figure, path)


def plot_any(report: Any, path: str | Path) -> Path:
    """Draw a :class:`QualityReport` or a :class:`PrecisionReport`."""
    if isinstance(report, QualityReport):
        return plot_quality(report, path)
    return plot_precision(report, path)
