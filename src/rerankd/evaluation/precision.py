"""Numerical agreement of two deployments' outputs (scores or embeddings) for the same inputs.

The report keeps the figures of the NPU-vs-CPU precision reports users already write: cosine similarity, MAE,
RMSE, mean and max relative error (``|b - a| / |a|``, output A being the reference). PASS/FAIL does not rest on
them: it is the rule the ``dtype="auto"`` guard applies too (:mod:`rerankd.runtime.acceptance`; docs/evaluation.md):
rank agreement, error relative to the score spread, and relative error only over *meaningful* values
(``|a|`` at least 10 % of the spread; near zero a relative error explodes and says nothing about a ranking).
For scores, each input is one query with its documents, and ranking agreement (Spearman, Kendall tau-b, top-k
overlap) is reported per query and averaged. Embeddings pass on their cosine to the reference (every input)
plus the spread and meaningful-relative-error criteria over their components.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from rerankd.errors import InvalidInput
from rerankd.evaluation.dependencies import import_eval_module
from rerankd.runtime.acceptance import PrecisionRule, judge

ZERO_GUARD = 1e-12
Kind = Literal["scores", "embeddings"]


@dataclass(frozen=True)
class Thresholds(PrecisionRule):
    """The shared acceptance rule (:class:`~rerankd.runtime.acceptance.PrecisionRule`: ``min_spearman``,
    ``max_spread_error``, ``max_relative_error`` on meaningful values, ``meaningful_fraction``) plus what only
    ``compare`` checks: ``min_cosine`` (per input, embeddings) and an optional ``min_top_k_overlap`` (scores)."""

    min_cosine: float = 0.99
    min_top_k_overlap: float | None = None


@dataclass(frozen=True)
class ErrorStats:
    """Element-wise differences of candidate ``b`` from reference ``a``; relative errors are fractions."""

    n: int
    cosine: float
    mae: float
    rmse: float
    max_abs_error: float
    mean_relative_error: float
    max_relative_error: float
    spread_error: float  # max |b - a| / (max a - min a)
    n_meaningful: int  # values with |a| >= meaningful_fraction x the spread
    mean_relative_error_meaningful: float | None
    max_relative_error_meaningful: float | None


@dataclass(frozen=True)
class RankAgreement:
    """How alike two score lists order their items; None where undefined (fewer than 2 items, constant scores)."""

    spearman: float | None
    kendall: float | None
    top_k_overlap: float | None
    k: int


@dataclass(frozen=True)
class InputComparison:
    label: str
    stats: ErrorStats
    agreement: RankAgreement | None


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    operator: Literal[">=", "<="]
    threshold: float
    passed: bool


@dataclass(frozen=True)
class PrecisionReport:
    """Per-input and overall agreement of B with reference A, and the PASS/FAIL checks."""

    kind: Kind
    label_a: str
    label_b: str
    inputs: tuple[InputComparison, ...]
    overall: ErrorStats
    mean_input_cosine: float
    agreement: RankAgreement | None
    thresholds: Thresholds
    checks: tuple[Check, ...]
    values_a: tuple[float, ...]
    values_b: tuple[float, ...]
    seconds_a: float | None = None
    seconds_b: float | None = None

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self, include_values: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "label_a": self.label_a,
            "label_b": self.label_b,
            "passed": self.passed,
            "checks": [asdict(check) for check in self.checks],
            "thresholds": asdict(self.thresholds),
            "overall": asdict(self.overall),
            "mean_input_cosine": self.mean_input_cosine,
            "agreement": asdict(self.agreement) if self.agreement else None,
            "seconds_a": self.seconds_a,
            "seconds_b": self.seconds_b,
            "inputs": [asdict(item) for item in self.inputs],
        }
        if include_values:
            out["values_a"], out["values_b"] = list(self.values_a), list(self.values_b)
        return out


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two vectors; 1.0 for two zero vectors, 0.0 when only one is zero."""
    norm_a, norm_b = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if norm_a == 0.0 or norm_b == 0.0:
        return 1.0 if norm_a == norm_b else 0.0
    return float(np.clip(np.dot(a, b) / (norm_a * norm_b), -1.0, 1.0))


def error_stats(
    reference: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray, meaningful_fraction: float = 0.1
) -> ErrorStats:
    """Cosine, MAE, RMSE, error relative to the spread and relative errors of ``candidate`` against ``reference``
    (same shape); the ``meaningful`` relative errors are over ``|a| >= meaningful_fraction x spread``."""
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(candidate, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        raise InvalidInput(f"cannot compare outputs of sizes {a.size} and {b.size}")
    absolute = np.abs(b - a)
    relative = absolute / np.maximum(np.abs(a), ZERO_GUARD)
    spread = float(np.ptp(a))
    active = np.abs(a) >= meaningful_fraction * spread
    return ErrorStats(
        n=int(a.size),
        cosine=cosine_similarity(a, b),
        mae=float(absolute.mean()),
        rmse=float(np.sqrt(np.mean(absolute**2))),
        max_abs_error=float(absolute.max()),
        mean_relative_error=float(relative.mean()),
        max_relative_error=float(relative.max()),
        spread_error=float(absolute.max() / spread) if spread > 0 else (0.0 if absolute.max() == 0 else math.inf),
        n_meaningful=int(active.sum()),
        mean_relative_error_meaningful=float(relative[active].mean()) if active.any() else None,
        max_relative_error_meaningful=float(relative[active].max()) if active.any() else None,
    )


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def rank_agreement(
    reference: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray, k: int = 3
) -> RankAgreement:
    """Spearman, Kendall tau-b and the overlap of the top-``k`` sets of two score lists for the same items."""
    a, b = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    k_used = min(k, a.size)
    top_a = set(np.argsort(-a, kind="stable")[:k_used].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k_used].tolist())
    overlap = len(top_a & top_b) / k_used if k_used else None
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return RankAgreement(None, None, overlap, k_used)
    stats = import_eval_module("scipy.stats", "ranking agreement")
    spearman = _finite_or_none(float(stats.spearmanr(a, b).statistic))
    kendall = _finite_or_none(float(stats.kendalltau(a, b).statistic))
    return RankAgreement(spearman, kendall, overlap, k_used)


def mean_agreement(items: Sequence[RankAgreement], k: int) -> RankAgreement:
    """The mean of each defined agreement measure over inputs."""

    def mean(values: list[float | None]) -> float | None:
        defined = [v for v in values if v is not None]
        return sum(defined) / len(defined) if defined else None

    return RankAgreement(
        spearman=mean([item.spearman for item in items]),
        kendall=mean([item.kendall for item in items]),
        top_k_overlap=mean([item.top_k_overlap for item in items]),
        k=k,
    )


def run_checks(
    groups_a: Sequence[np.ndarray],
    groups_b: Sequence[np.ndarray],
    kind: Kind,
    agreement: RankAgreement | None,
    thresholds: Thresholds,
    cosines: Sequence[float],
) -> tuple[Check, ...]:
    """PASS/FAIL by the shared rule (:func:`rerankd.runtime.acceptance.judge`), plus compare's own checks."""
    verdict = judge(groups_a, groups_b, thresholds)
    t = thresholds
    meaningful = f"mean relative error (|A| >= {t.meaningful_fraction:.0%} of spread)"
    checks = []
    if kind == "scores":
        rho = verdict.spearman
        checks.append(Check("spearman (mean per query)", rho, ">=", t.min_spearman, verdict.passed_spearman))
    else:
        lowest = min(cosines)
        checks.append(Check("cosine (lowest input)", lowest, ">=", t.min_cosine, lowest >= t.min_cosine))
    checks += [
        Check("max error / spread", verdict.spread_error, "<=", t.max_spread_error, verdict.passed_spread_error),
        Check(meaningful, verdict.relative_error, "<=", t.max_relative_error, verdict.passed_relative_error),
    ]
    if kind == "scores" and t.min_top_k_overlap is not None:
        overlap = agreement.top_k_overlap if agreement else None
        passed = overlap is not None and overlap >= t.min_top_k_overlap
        checks.append(Check("top-k overlap", overlap, ">=", t.min_top_k_overlap, passed))
    return tuple(checks)


def compare_outputs(
    groups_a: Sequence[Sequence[float]] | Sequence[np.ndarray],
    groups_b: Sequence[Sequence[float]] | Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    kind: Kind = "scores",
    thresholds: Thresholds | None = None,
    top_k: int = 3,
    label_a: str = "A",
    label_b: str = "B",
    seconds: tuple[float | None, float | None] = (None, None),
) -> PrecisionReport:
    """Compare B's outputs with reference A's, input by input (a query's document scores, or one embedding)."""
    limits = thresholds or Thresholds()
    if not (len(groups_a) == len(groups_b) == len(labels)) or not labels:
        raise InvalidInput("A, B and the labels need the same, non-zero number of inputs")
    inputs = []
    arrays_a = [np.asarray(a, dtype=np.float64).ravel() for a in groups_a]
    arrays_b = [np.asarray(b, dtype=np.float64).ravel() for b in groups_b]
    for label, a, b in zip(labels, arrays_a, arrays_b, strict=True):
        stats = error_stats(a, b, limits.meaningful_fraction)
        agreement = rank_agreement(a, b, top_k) if kind == "scores" else None
        inputs.append(InputComparison(label, stats, agreement))
    flat_a, flat_b = np.concatenate(arrays_a), np.concatenate(arrays_b)
    overall = error_stats(flat_a, flat_b, limits.meaningful_fraction)
    agreement = mean_agreement([i.agreement for i in inputs if i.agreement], top_k) if kind == "scores" else None
    return PrecisionReport(
        kind=kind,
        label_a=label_a,
        label_b=label_b,
        inputs=tuple(inputs),
        overall=overall,
        mean_input_cosine=float(np.mean([item.stats.cosine for item in inputs])),
        agreement=agreement,
        thresholds=limits,
        checks=run_checks(arrays_a, arrays_b, kind, agreement, limits, [i.stats.cosine for i in inputs]),
        values_a=tuple(flat_a.tolist()),
        values_b=tuple(flat_b.tolist()),
        seconds_a=seconds[0],
        seconds_b=seconds[1],
    )
