"""Paired A/B comparison of two systems' per-query values: win/tie/loss counts and significance tests."""

from __future__ import annotations

import math
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
