"""The one definition of "acceptable precision", shared by the ``dtype="auto"`` guard (:mod:`.dtype_guard`) and
``rerankd compare`` (:mod:`rerankd.evaluation.precision`); docs/evaluation.md explains it.

A candidate's scores (reduced precision, another device, backend or batch size) are acceptable against a
reference's when what a ranking depends on is kept:

1. **rank agreement**: the mean, over queries, of Spearman's rho between the two score lists of a query is at
   least ``min_spearman`` (0.98: one swap of neighbours among 12 documents gives 0.993);
2. **error relative to the score spread**: no score moves by more than ``max_spread_error`` (2 %) of the
   spread of the reference scores (max - min over every input), the scale on which documents are told apart;
3. **relative error where it means something**: the mean ``|b - a| / |a|`` over the *meaningful* scores, those
   with ``|a|`` at least ``meaningful_fraction`` (10 %) of the spread, is at most ``max_relative_error`` (1 %).
   Near zero (cosines of unrelated texts, sigmoid outputs of irrelevant documents) a relative error says
   nothing about the ranking: 0.0010 vs 0.0012 is "20 %" and changes no order.

Numpy only (no scipy, no torch): the guard runs it at load time and the CLI before any model is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TIE_FREE_SPREAD = 1e-12  # below this the reference has no spread: only identical scores are acceptable


@dataclass(frozen=True)
class PrecisionRule:
    """The PASS thresholds (see the module docstring)."""

    min_spearman: float = 0.98
    max_spread_error: float = 0.02
    max_relative_error: float = 0.01
    meaningful_fraction: float = 0.1


@dataclass(frozen=True)
class Verdict:
    """The rule's three measures and whether each passed; ``spearman`` is None when no query has two differing
    reference scores to order (nothing to disagree about)."""

    spearman: float | None
    spread_error: float
    relative_error: float
    n_meaningful: int
    spread: float
    passed_spearman: bool
    passed_spread_error: bool
    passed_relative_error: bool

    @property
    def passed(self) -> bool:
        return self.passed_spearman and self.passed_spread_error and self.passed_relative_error

    def failures(self) -> list[str]:
        """The failed criteria, in words (empty when the verdict is PASS)."""
        words = []
        if not self.passed_spearman:
            words.append(f"spearman {self.spearman if self.spearman is not None else float('nan'):.4f}")
        if not self.passed_spread_error:
            words.append(f"max error {self.spread_error:.2%} of the spread")
        if not self.passed_relative_error:
            words.append(f"mean relative error {self.relative_error:.2%} on meaningful scores")
        return words


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their mean rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(values.size, dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=ranks)[inverse] / counts[inverse]


def spearman(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Spearman's rho of two score lists for the same items; None when the reference cannot be ordered."""
    if reference.size < 2 or np.ptp(reference) == 0:
        return None
    ranks_a, ranks_b = average_ranks(reference), average_ranks(candidate)
    if np.ptp(ranks_b) == 0:
        return 0.0
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def judge(
    reference: Sequence[Sequence[float]] | Sequence[np.ndarray],
    candidate: Sequence[Sequence[float]] | Sequence[np.ndarray],
    rule: PrecisionRule | None = None,
) -> Verdict:
    """Judge ``candidate`` against ``reference``, given as one score list per query (same shapes)."""
    rule = rule or PrecisionRule()
    groups_a = [np.asarray(group, dtype=np.float64).ravel() for group in reference]
    groups_b = [np.asarray(group, dtype=np.float64).ravel() for group in candidate]
    if len(groups_a) != len(groups_b) or any(a.shape != b.shape for a, b in zip(groups_a, groups_b, strict=True)):
        raise ValueError("reference and candidate need the same number of scores per query")
    a, b = np.concatenate(groups_a), np.concatenate(groups_b)
    if a.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return Verdict(None, float("inf"), float("inf"), 0, 0.0, False, False, False)
    spread = float(np.ptp(a))
    error = np.abs(b - a)
    if spread <= TIE_FREE_SPREAD:
        identical = bool((error == 0).all())
        return Verdict(None, 0.0 if identical else float("inf"), 0.0, 0, spread, identical, identical, identical)
    rhos = [rho for ga, gb in zip(groups_a, groups_b, strict=True) if (rho := spearman(ga, gb)) is not None]
    mean_rho = float(np.mean(rhos)) if rhos else None
    spread_error = float(error.max() / spread)
    meaningful = np.abs(a) >= rule.meaningful_fraction * spread  # never empty: max or min is >= spread / 2
    relative = float(np.mean(error[meaningful] / np.abs(a[meaningful])))
    return Verdict(
        spearman=mean_rho,
        spread_error=spread_error,
        relative_error=relative,
        n_meaningful=int(meaningful.sum()),
        spread=spread,
        passed_spearman=mean_rho is None or mean_rho >= rule.min_spearman,
        passed_spread_error=spread_error <= rule.max_spread_error,
        passed_relative_error=relative <= rule.max_relative_error,
    )
