"""Paired A/B tests: exact randomisation p-values by hand, the t-test against scipy, win/tie/loss counts."""

from __future__ import annotations

import numpy as np
import pytest

from rerankd.errors import InvalidInput
from rerankd.evaluation.significance import compare_paired, paired_t_test, randomisation_test


def test_exact_randomisation_p_value_by_hand() -> None:
    # 3 queries all improved by 1: of the 8 sign patterns only (+,+,+) and (-,-,-) reach |mean| = 1.
    assert randomisation_test(np.array([1.0, 1.0, 1.0])) == pytest.approx(2 / 8)
    # differences 2, 1, 0: |mean| >= 1 for (+,+), (-,-) with either sign on the zero -> 4 of 8
    assert randomisation_test(np.array([2.0, 1.0, 0.0])) == pytest.approx(4 / 8)
    assert randomisation_test(np.zeros(5)) == 1.0


def test_monte_carlo_randomisation_is_close_to_exact_and_reproducible() -> None:
    rng = np.random.default_rng(3)
    differences = rng.normal(0.05, 0.2, size=18)  # 2**18 patterns > resamples: Monte Carlo
    exact = randomisation_test(differences[:16], resamples=2**16)
    assert 0.0 < exact <= 1.0
    first = randomisation_test(differences, resamples=4000, seed=1)
    assert first == randomisation_test(differences, resamples=4000, seed=1)
    assert randomisation_test(differences, resamples=20000, seed=2) == pytest.approx(first, abs=0.03)


def test_paired_t_test_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    a = np.array([0.2, 0.5, 0.4, 0.9, 0.3])
    b = np.array([0.3, 0.6, 0.4, 1.0, 0.2])
    assert paired_t_test(a, b) == pytest.approx(float(stats.ttest_rel(b, a).pvalue))
    assert paired_t_test(a, a) == 1.0


def test_compare_paired_counts_wins_ties_losses_on_shared_queries() -> None:
    base = {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 0.5}, "q3": {"ndcg@10": 0.9}, "q4": {"ndcg@10": 0.1}}
    cand = {"q1": {"ndcg@10": 0.7}, "q2": {"ndcg@10": 0.5}, "q3": {"ndcg@10": 0.8}}
    result = compare_paired(("bm25", base), ("model", cand), "ndcg@10")
    assert (result.n_queries, result.wins, result.ties, result.losses) == (3, 1, 1, 1)
    assert result.delta == pytest.approx((0.2 + 0.0 - 0.1) / 3)
    assert result.baseline_mean == pytest.approx(1.9 / 3)
    # differences 0.2, 0, -0.1: every sign pattern gives |sum| of 0.1 or 0.3 >= the observed 0.1 -> p = 1
    assert result.p_randomisation == pytest.approx(1.0)
    assert not result.significant
    with pytest.raises(InvalidInput):
        compare_paired(("a", base), ("b", {"other": {"ndcg@10": 1.0}}), "ndcg@10")
