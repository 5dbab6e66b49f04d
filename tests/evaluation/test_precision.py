"""Precision comparison maths: hand-computed error statistics, PASS/FAIL rules, ranking agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rerankd.errors import InvalidInput
from rerankd.evaluation import (
    QueryDocumentPair,
    Thresholds,
    compare_outputs,
    error_stats,
    parse_configuration,
    rank_agreement,
    scores_report,
)


def test_error_stats_by_hand() -> None:
    stats = error_stats([1.0, -2.0, 4.0, 0.0005], [1.1, -2.0, 3.6, 0.001])
    assert stats.mae == pytest.approx((0.1 + 0 + 0.4 + 0.0005) / 4)
    assert stats.rmse == pytest.approx(math.sqrt((0.01 + 0.16 + 0.0005**2) / 4))
    assert stats.max_abs_error == pytest.approx(0.4)
    # relative: 0.1, 0, 0.1, 1.0 (the near-zero value doubles)
    assert stats.mean_relative_error == pytest.approx(1.2 / 4)
    assert stats.max_relative_error == pytest.approx(1.0)
    assert stats.spread_error == pytest.approx(0.4 / 6.0)  # spread: 4 - (-2)
    assert stats.n_meaningful == 3  # |a| >= 10% of the spread (0.6): not 0.0005
    assert stats.mean_relative_error_meaningful == pytest.approx(0.2 / 3)
    assert stats.max_relative_error_meaningful == pytest.approx(0.1)
    a, b = np.array([1.0, -2.0, 4.0, 0.0005]), np.array([1.1, -2.0, 3.6, 0.001])
    assert stats.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_identical_outputs_pass_with_cosine_one() -> None:
    groups = [[0.9, 0.1, 0.5], [0.3, 0.8]]
    report = compare_outputs(groups, groups, ["q1", "q2"])
    assert report.passed
    assert report.overall.cosine == 1.0 and report.mean_input_cosine == 1.0
    assert report.overall.mae == 0.0 and report.overall.max_relative_error == 0.0
    assert report.agreement is not None
    assert (report.agreement.spearman, report.agreement.kendall, report.agreement.top_k_overlap) == (1.0, 1.0, 1.0)


def checks_of(report: object) -> dict[str, tuple[float | None, bool]]:
    return {check.name: (check.value, check.passed) for check in report.checks}  # type: ignore[attr-defined]


MEANINGFUL = "mean relative error (|A| >= 10% of spread)"


def test_the_verdict_rests_on_ranking_spread_and_meaningful_relative_error() -> None:
    a = [[0.9, 0.1, 0.5, 0.7], [0.3, 0.8, 0.6]]
    b = [[x * 1.03 for x in group] for group in a]  # 3 % everywhere: same order, cosine 1
    report = compare_outputs(a, b, ["q1", "q2"])
    checks = checks_of(report)
    assert list(checks) == ["spearman (mean per query)", "max error / spread", MEANINGFUL]
    assert checks["spearman (mean per query)"] == (1.0, True)
    assert checks["max error / spread"] == (pytest.approx(0.027 / 0.8), False)  # 0.9 moved 0.027; spread 0.8
    assert checks[MEANINGFUL] == (pytest.approx(0.03), False)
    assert not report.passed
    shuffled = compare_outputs(a, [[0.1, 0.9, 0.7, 0.5], [0.8, 0.3, 0.6]], ["q1", "q2"])
    assert not shuffled.passed
    assert checks_of(shuffled)["spearman (mean per query)"][0] < 0


def test_near_zero_reference_values_do_not_decide_the_verdict() -> None:
    """The seed's rule failed bf16 MiniLM on cosines near zero: 0.0010 vs 0.0012 is '20 %' and changes no order."""
    a = [[0.5, 0.25, 0.001, -0.01]]
    b = [[0.5001, 0.2501, 0.0012, -0.011]]
    report = compare_outputs(a, b, ["q"])
    assert report.overall.mean_relative_error > 0.05  # the 'all values' figure is still reported
    assert report.overall.n_meaningful == 2
    assert report.overall.mean_relative_error_meaningful == pytest.approx((0.0001 / 0.5 + 0.0001 / 0.25) / 2)
    assert report.passed


def test_the_shared_rule_is_the_guard_rule() -> None:
    """compare and the dtype="auto" guard give the same verdict on the same scores."""
    from rerankd.runtime.dtype_guard import compare_scores

    reference = [0.1, 0.4, 0.35, 0.9, 0.05, 0.6]
    for candidate, expected in [
        ([0.101, 0.401, 0.351, 0.899, 0.0502, 0.601], True),
        ([0.1, 0.35, 0.4, 0.9, 0.05, 0.6], False),  # 0.05 of a 0.85 spread: 5.9% > 2%
        ([0.1, 0.4, 0.35, 0.9, 0.05, 0.612], True),  # 2% of 0.6: 1.4% of the spread, 0.33% mean relative
    ]:
        guard = compare_scores(reference, candidate)
        report = compare_outputs([reference], [candidate], ["probe"])
        assert guard.passed is report.passed is expected
        assert guard.relative_error == pytest.approx(checks_of(report)["max error / spread"][0])


def test_optional_top_k_overlap_and_thresholds() -> None:
    a, b = [[0.9, 0.8, 0.1, 0.05]], [[0.8, 0.9, 0.1, 0.05]]  # two top documents swap
    lenient = Thresholds(min_spearman=0.5, max_spread_error=1.0, max_relative_error=1.0)
    assert compare_outputs(a, b, ["q"], thresholds=lenient).passed
    assert not compare_outputs(a, b, ["q"]).passed  # spearman 0.8 < 0.98
    overlap = Thresholds(min_spearman=0.5, max_spread_error=1.0, max_relative_error=1.0, min_top_k_overlap=1.0)
    assert compare_outputs(a, b, ["q"], thresholds=overlap, top_k=1).passed is False


def test_embeddings_pass_on_cosine_per_input() -> None:
    a = [np.array([0.6, 0.8, 0.0]), np.array([1.0, 0.0, 0.0])]
    close = [np.array([0.601, 0.799, 0.0005]), np.array([0.9995, 0.001, 0.0])]
    report = compare_outputs(a, close, ["t1", "t2"], kind="embeddings")
    assert report.checks[0].name == "cosine (lowest input)" and report.passed
    turned = [np.array([0.8, 0.6, 0.0]), np.array([1.0, 0.0, 0.0])]
    assert not compare_outputs(a, turned, ["t1", "t2"], kind="embeddings").passed


def test_rank_agreement_edge_cases() -> None:
    single = rank_agreement([0.5], [0.4], k=3)
    assert (single.spearman, single.kendall, single.top_k_overlap, single.k) == (None, None, 1.0, 1)
    assert rank_agreement([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], k=2).top_k_overlap == 0.0


def test_scores_report_groups_pairs_by_query() -> None:
    pairs = [QueryDocumentPair("q1", "a"), QueryDocumentPair("q2", "b"), QueryDocumentPair("q1", "c")]
    report = scores_report(pairs, ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]), labels=("x", "y"))
    assert [item.label for item in report.inputs] == ["q1", "q2"]
    assert [item.stats.n for item in report.inputs] == [2, 1]
    assert report.values_a == (1.0, 3.0, 2.0)
    with pytest.raises(InvalidInput):
        compare_outputs([[1.0]], [[1.0, 2.0]], ["q"])


def test_parse_configuration() -> None:
    base = {"model": "m", "dtype": "auto", "batch_tokens": None}
    config = parse_configuration(
        "B", base, ["dtype=bfloat16", "batch-tokens=256", "cutoff_layers=8,12", "normalize=no"]
    )
    assert config.load == {"model": "m", "dtype": "bfloat16", "batch_tokens": 256, "normalize": False}
    assert config.call == {"cutoff_layers": (8, 12)}
    for bad in (["dtype"], ["colour=red"], ["max_length=long"]):
        with pytest.raises(InvalidInput):
            parse_configuration("B", base, bad)
