"""Paired A/B comparison of two systems' per-query values: win/tie/loss counts and significance tests."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rerankd.errors import InvalidInput
from rerankd.evaluation.dependencies import import_eval_module

TIE_TOLERANCE = 1e-12
RESAMPLE_CHUNK = 4096
MAX_EXACT_QUERIES = 16


@dataclass(frozen=True)
class PairedComparison:
    """System ``candidate`` against ``baseline`` on one measure over the same queries.

    ``wins`` counts queries where the candidate is better, ``losses`` where it is worse. ``delta`` is
    ``candidate_mean - baseline_mean``. ``p_randomisation`` is the two-sided paired randomisation
    (sign-flip) test, exact when ``2**n_queries <= resamples``; ``p_ttest`` the two-sided paired t-test
    (1.0 when every difference is zero).
    """

    baseline: str
    candidate: str
    measure: str
    n_queries: int
    baseline_mean: float
    candidate_mean: float
    delta: float
    wins: int
    ties: int
    losses: int
    p_randomisation: float
    p_ttest: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_randomisation < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def randomisation_test(differences: np.ndarray, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomisation test of mean(differences) == 0 by random sign flips.

    Exact (all ``2**n`` sign patterns) when that is at most ``resamples``; otherwise Monte Carlo with the
    ``(hits + 1) / (resamples + 1)`` estimate, reproducible through ``seed``.
    """
    n = len(differences)
    if n == 0:
        return 1.0
    observed = abs(float(differences.mean()))
    if observed <= TIE_TOLERANCE:
        return 1.0
    if n <= MAX_EXACT_QUERIES and 2**n <= resamples:
        patterns = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        means = np.abs(((1 - 2 * patterns) * differences).mean(axis=1))
        return float(np.mean(means >= observed - TIE_TOLERANCE))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, RESAMPLE_CHUNK):
        size = min(RESAMPLE_CHUNK, resamples - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        hits += int(np.sum(np.abs((signs * differences).mean(axis=1)) >= observed - TIE_TOLERANCE))
    return (hits + 1) / (resamples + 1)


def paired_t_test(baseline: np.ndarray, candidate: np.ndarray) -> float:
    stats = import_eval_module("scipy.stats", "the paired t-test")
    differences = candidate - baseline
    if len(differences) < 2 or np.all(np.abs(differences) <= TIE_TOLERANCE):
        return 1.0
    p_value = float(stats.ttest_rel(candidate, baseline).pvalue)
    return 1.0 if math.isnan(p_value) else p_value


def compare_paired(
    baseline: tuple[str, Mapping[str, Mapping[str, float]]],
    candidate: tuple[str, Mapping[str, Mapping[str, float]]],
    measure: str,
    *,
    resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedComparison:
    """Compare two systems' per-query values (query id -> measure -> value) on ``measure``."""
    (base_name, base_values), (cand_name, cand_values) = baseline, candidate
    qids = [qid for qid in base_values if qid in cand_values]
    if not qids:
        raise InvalidInput(f"{base_name} and {cand_name} share no evaluated query")
    a = np.array([base_values[qid][measure] for qid in qids], dtype=np.float64)
    b = np.array([cand_values[qid][measure] for qid in qids], dtype=np.float64)
    differences = b - a
    return PairedComparison(
        baseline=base_name,
        candidate=cand_name,
        measure=measure,
        n_queries=len(qids),
        baseline_mean=float(a.mean()),
        candidate_mean=float(b.mean()),
        delta=float(differences.mean()),
        wins=int(np.sum(differences > TIE_TOLERANCE)),
        ties=int(np.sum(np.abs(differences) <= TIE_TOLERANCE)),
        losses=int(np.sum(differences < -TIE_TOLERANCE)),
        p_randomisation=randomisation_test(differences, resamples, seed),
        p_ttest=paired_t_test(a, b),
        alpha=alpha,
    )


@dataclass(frozen=True)
class GroupComparison:
    """Two independent groups (e.g. the arms of an online A/B split: each event was served by one arm only).

    ``p_randomisation`` is a two-sided permutation test of equal means (labels shuffled between the groups);
    ``p_welch`` Welch's t-test. ``needed_per_group`` is how many events each group would need for 80% power at
    ``alpha`` to detect the observed difference (two-sample normal approximation; None when it is zero)."""

    baseline: str
    candidate: str
    measure: str
    n_baseline: int
    n_candidate: int
    baseline_mean: float
    candidate_mean: float
    delta: float
    p_randomisation: float
    p_welch: float
    alpha: float
    needed_per_group: int | None

    @property
    def significant(self) -> bool:
        return self.p_randomisation < self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def permutation_test(a: np.ndarray, b: np.ndarray, resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided permutation test of mean(b) == mean(a) for independent samples (Monte Carlo, reproducible)."""
    if len(a) == 0 or len(b) == 0:
        return 1.0
    observed = abs(float(b.mean() - a.mean()))
    if observed <= TIE_TOLERANCE:
        return 1.0
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, min(RESAMPLE_CHUNK, 2_000_000 // len(pooled)))  # bounded memory whatever the group sizes
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        shuffled = rng.permuted(np.broadcast_to(pooled, (size, len(pooled))), axis=1)
        diffs = np.abs(shuffled[:, len(a) :].mean(axis=1) - shuffled[:, : len(a)].mean(axis=1))
        hits += int(np.sum(diffs >= observed - TIE_TOLERANCE))
    return (hits + 1) / (resamples + 1)


def events_needed(a: np.ndarray, b: np.ndarray, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Events per group to detect the observed mean difference with ``power`` (two-sided, normal approximation)."""
    stats = import_eval_module("scipy.stats", "the power calculation")
    delta = abs(float(b.mean() - a.mean())) if len(a) and len(b) else 0.0
    variance = (float(a.var(ddof=1)) if len(a) > 1 else 0.0) + (float(b.var(ddof=1)) if len(b) > 1 else 0.0)
    if delta <= TIE_TOLERANCE:
        return None
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return max(2, math.ceil(z * z * variance / (delta * delta)))


def compare_groups(
    baseline: tuple[str, np.ndarray],
    candidate: tuple[str, np.ndarray],
    measure: str,
    *,
    resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> GroupComparison:
    (base_name, a), (cand_name, b) = baseline, candidate
    stats = import_eval_module("scipy.stats", "Welch's t-test")
    p_welch = 1.0
    if len(a) > 1 and len(b) > 1 and (a.var() > 0 or b.var() > 0):
        with warnings.catch_warnings():  # one constant group (e.g. every event a first-rank click) is valid data
            warnings.simplefilter("ignore", RuntimeWarning)
            p_welch = float(stats.ttest_ind(b, a, equal_var=False).pvalue)
    return GroupComparison(
        baseline=base_name,
        candidate=cand_name,
        measure=measure,
        n_baseline=len(a),
        n_candidate=len(b),
        baseline_mean=float(a.mean()) if len(a) else 0.0,
        candidate_mean=float(b.mean()) if len(b) else 0.0,
        delta=float(b.mean() - a.mean()) if len(a) and len(b) else 0.0,
        p_randomisation=permutation_test(a, b, resamples, seed),
        p_welch=1.0 if math.isnan(p_welch) else p_welch,
        alpha=alpha,
        needed_per_group=events_needed(a, b, alpha),
    )
