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
    assert stats.n_active == 3  # |a| > 1e-3
    assert stats.mean_relative_error_active == pytest.approx(0.2 / 3)
    assert stats.max_relative_error_active == pytest.approx(0.1)
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


def test_a_perturbation_fails_the_relative_error_check_but_not_cosine() -> None:
    a = [[0.9, 0.1, 0.5, 0.7], [0.3, 0.8, 0.6]]
    b = [[x * 1.03 for x in group] for group in a]  # 3 % everywhere: same direction, cosine 1
    report = compare_outputs(a, b, ["q1", "q2"])
    assert not report.passed
    checks = {check.name: check for check in report.checks}
    assert checks["cosine"].passed
    assert not checks["mean relative error (all)"].passed
    assert checks["mean relative error (all)"].value == pytest.approx(0.03)
    shuffled = compare_outputs(a, [[0.1, 0.9, 0.7, 0.5], [0.8, 0.3, 0.6]], ["q1", "q2"])
    assert not shuffled.passed
    assert shuffled.agreement is not None and shuffled.agreement.spearman is not None
    assert shuffled.agreement.spearman < 0


def test_near_zero_reference_values_only_inflate_the_all_values_relative_error() -> None:
    a = [[0.5, 0.25, 1e-6]]
    b = [[0.5001, 0.25, 2e-6]]  # 100 % relative error on a value that is 1e-6
    report = compare_outputs(a, b, ["q"])
    assert not report.passed
    assert report.overall.mean_relative_error_active == pytest.approx(0.0001 / 0.5 / 2)
    lenient = compare_outputs(a, b, ["q"], thresholds=Thresholds(relative_error_on="active"))
    assert lenient.passed


def test_optional_ranking_thresholds() -> None:
    a, b = [[0.9, 0.8, 0.1]], [[0.8, 0.9, 0.1]]
    assert compare_outputs(a, b, ["q"], thresholds=Thresholds(max_mean_relative_error=1.0)).passed
    strict = compare_outputs(a, b, ["q"], thresholds=Thresholds(max_mean_relative_error=1.0, min_spearman=0.9))
    assert not strict.passed


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
