"""Ranking agreement (shadow scoring) and the two-group comparison (online A/B), against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from rerankd.evaluation.significance import compare_groups, events_needed, permutation_test
from rerankd.server.admin.agreement import agreement, kendall_tau, rank_biased_overlap, top_k_overlap
from rerankd.server.admin.feedback import Served, outcome, satisfied_clicks
from rerankd.server.admin.traffic import bucket, draw


def test_kendall_tau_by_hand() -> None:
    assert kendall_tau([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert kendall_tau([0, 1, 2, 3], [3, 2, 1, 0]) == -1.0
    # one swapped adjacent pair out of 6: (5 - 1) / 6
    assert kendall_tau([0, 1, 2, 3], [1, 0, 2, 3]) == pytest.approx(4 / 6)


def test_overlaps_by_hand() -> None:
    assert top_k_overlap([0, 1, 2, 3, 4, 5], [1, 0, 5, 4, 3, 2], 1) == 0.0
    assert top_k_overlap([0, 1, 2, 3, 4, 5], [1, 0, 5, 4, 3, 2], 2) == 1.0
    assert top_k_overlap([0, 1, 2, 3, 4, 5], [1, 0, 5, 4, 3, 2], 5) == pytest.approx(4 / 5)
    assert rank_biased_overlap([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    # depth 1: 0/1, depth 2: 2/2 -> (1-p)(0 + 1*p) + (2/2)*p^2 with p = 0.9 over two items
    assert rank_biased_overlap([0, 1], [1, 0]) == pytest.approx(0.1 * 0.9 + 0.81)
    assert set(agreement([0, 1, 2], [2, 1, 0])) == {"kendall_tau", "top1_overlap", "top5_overlap", "rbo"}


def test_outcome_of_one_served_ranking() -> None:
    served = Served("main", "b", (3, 0, 2, 1), 0.0)  # document 3 was shown first, 1 last
    clicked_second = outcome(served, [0], {}, k=10)
    assert clicked_second.mrr == 0.5 and clicked_second.ctr == 1.0
    assert clicked_second.rank_lift == -1.0  # document 0: first in the caller's order, second after reranking
    lifted = outcome(served, [3], {}, k=10)
    assert lifted.mrr == 1.0 and lifted.rank_lift == 3.0 and lifted.ndcg == 1.0
    assert outcome(served, [1], {}, k=2).ctr == 0.0  # clicked, but below the cutoff


def test_a_short_click_is_not_a_satisfied_click() -> None:
    served = Served("main", "b", (3, 0, 2, 1), 0.0)
    # document 3 (shown first) opened for 2 s, document 0 (second) read for 45 s: only 0 counts at a 30 s threshold
    dwell = {3: 2_000.0, 0: 45_000.0}
    assert satisfied_clicks([3, 0], dwell, 30_000) == [0]
    judged = outcome(served, [3, 0], {}, k=10, dwell_ms=dwell, min_dwell_ms=30_000)
    assert judged.mrr == 0.5 and judged.rank_lift == -1.0 and judged.ctr == 1.0
    only_short = outcome(served, [3], {}, k=10, dwell_ms={3: 2_000.0}, min_dwell_ms=30_000)
    assert only_short.mrr == 0.0 and only_short.ctr == 0.0 and only_short.rank_lift == 0.0
    assert outcome(served, [3], {}, k=10, dwell_ms={3: 2_000.0}, min_dwell_ms=0).mrr == 1.0  # threshold off
    assert outcome(served, [3], {}, k=10, dwell_ms={}, min_dwell_ms=30_000).mrr == 1.0  # no dwell reported: counts
    graded = outcome(served, [3], {3: 2}, k=10, dwell_ms={3: 2_000.0}, min_dwell_ms=30_000)
    assert graded.mrr == 1.0  # an explicit grade wins over a short dwell


def test_sticky_buckets_are_stable_and_weights_are_respected() -> None:
    assert bucket("main", "user-1") == bucket("main", "user-1") != bucket("other", "user-1")
    arms = [("a", 70.0), ("b", 30.0)]
    assert draw(arms, 0.69) == "a" and draw(arms, 0.71) == "b" and draw([("a", 0.0), ("b", 1.0)], 0.0) == "b"


def test_group_comparison_finds_a_real_difference_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.2, 200)
    b = rng.normal(0.6, 0.2, 200)
    real = compare_groups(("a", a), ("b", b), "mrr")
    assert real.significant and real.delta == pytest.approx(b.mean() - a.mean())
    same = compare_groups(("a", a), ("a2", rng.permutation(a)), "mrr")
    assert not same.significant and permutation_test(a, a) == 1.0
    # 0.1 difference, sd 0.2 each: 2 * (1.96 + 0.84)^2 * 0.04 / 0.01 ~ 63 events per group
    assert 40 <= events_needed(rng.normal(0.5, 0.2, 5000), rng.normal(0.6, 0.2, 5000)) <= 90  # type: ignore[operator]
