from __future__ import annotations

import pytest
import torch

from rerankd.runtime.dtype_guard import compare_scores, guard_reduced_precision


def test_identical_scores_agree() -> None:
    result = compare_scores([0.1, 0.5, 0.9], [0.1, 0.5, 0.9])
    assert result.passed and result.spearman == pytest.approx(1.0) and result.relative_error == 0.0


def test_swapped_order_fails() -> None:
    result = compare_scores([0.1, 0.5, 0.9, 0.95], [0.1, 0.5, 0.96, 0.95])
    assert not result.passed and result.spearman < 1.0


def test_small_noise_passes_large_noise_fails() -> None:
    ref = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert compare_scores(ref, [0.01, 1.0, 2.02, 3.0, 4.03]).passed
    assert not compare_scores(ref, [0.3, 1.0, 2.0, 3.0, 4.0]).passed  # 7.5% of the spread


def test_flat_or_nan_scores_fail() -> None:
    assert not compare_scores([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]).passed
    assert not compare_scores([0.1, 0.9], [float("nan"), 0.9]).passed


def test_guard_keeps_or_reverts_the_dtype() -> None:
    """A real tensor computation: bf16 on well-spread inputs passes; a cast that destroys order reverts."""
    torch.manual_seed(0)
    weights = torch.randn(16, 8)
    inputs = torch.randn(12, 16) * 3
    state = {"dtype": torch.float32}

    def probe() -> list[float]:
        return (inputs.to(state["dtype"]) @ weights.to(state["dtype"])).sum(dim=1).float().tolist()

    def cast(dtype: torch.dtype) -> None:
        state["dtype"] = dtype

    chosen, agreement = guard_reduced_precision(probe, cast, torch.bfloat16)
    assert chosen is torch.bfloat16 and agreement.passed and state["dtype"] is torch.bfloat16

    state["dtype"] = torch.float32

    def broken_cast(dtype: torch.dtype) -> None:
        state["dtype"] = dtype
        inputs.neg_()  # each cast flips every score: the reduced-precision order is reversed

    chosen, agreement = guard_reduced_precision(probe, broken_cast, torch.bfloat16)
    assert chosen is torch.float32 and not agreement.passed and state["dtype"] is torch.float32
