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


# --- wired into Reranker.from_pretrained (dtype="auto" on a CPU reported as having native bf16)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from rerankd import Reranker  # noqa: E402
from rerankd.runtime import dtype_guard  # noqa: E402
from rerankd.runtime.dtype_guard import PROBE_PAIRS, Agreement  # noqa: E402


def _param_dtypes(model: Reranker) -> set[torch.dtype]:
    return {p.dtype for p in model.family.weights().parameters()}  # type: ignore[union-attr]


def test_auto_keeps_bf16_when_the_probe_agrees(monkeypatch: pytest.MonkeyPatch, minilm_path: Path) -> None:
    """The real MiniLM keeps its probe ranking in bf16: the guard keeps bf16 and records the agreement."""
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    model = Reranker.from_pretrained(str(minilm_path), device="cpu")
    assert model.info.dtype == "bfloat16" and _param_dtypes(model) == {torch.bfloat16}
    check = model.info.dtype_check
    assert check is not None and check.passed and check.spearman >= 0.98
    reference = Reranker.from_pretrained(str(minilm_path), device="cpu", dtype="float32").score(PROBE_PAIRS)
    assert np.allclose(model.score(PROBE_PAIRS), reference, atol=2e-2)


def test_auto_falls_back_to_exact_float32(monkeypatch: pytest.MonkeyPatch, bert_ce: Path) -> None:
    """When the probe disagrees the model returns to its original float32 weights, bit for bit."""
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    monkeypatch.setattr(dtype_guard, "compare_scores", lambda *a, **k: Agreement(0.5, 1.0, False))
    model = Reranker.from_pretrained(str(bert_ce), device="cpu")
    assert model.info.dtype == "float32" and _param_dtypes(model) == {torch.float32}
    assert model.info.dtype_check is not None and not model.info.dtype_check.passed
    reference = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    assert model.score(PROBE_PAIRS) == reference.score(PROBE_PAIRS)


def test_guard_off_or_explicit_dtype_loads_directly(monkeypatch: pytest.MonkeyPatch, bert_ce: Path) -> None:
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    calls: list[object] = []
    monkeypatch.setattr(dtype_guard, "guard_reduced_precision", lambda *a: calls.append(a))
    unguarded = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype_guard=False)
    explicit = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="bfloat16")
    assert calls == [] and unguarded.info.dtype_check is None and explicit.info.dtype_check is None
    assert _param_dtypes(unguarded) == _param_dtypes(explicit) == {torch.bfloat16}


def test_models_too_big_for_a_float32_copy_skip_the_guard(monkeypatch: pytest.MonkeyPatch, bert_ce: Path) -> None:
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    monkeypatch.setattr(dtype_guard, "free_memory", lambda device: 1024)
    model = Reranker.from_pretrained(str(bert_ce), device="cpu")
    assert model.info.dtype == "bfloat16" and model.info.dtype_check is None


# --- a deterministic verdict (issue 13 item 5, issue 20 item 1)


def test_free_memory_is_mem_available_not_mem_free(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With a full page cache MemFree is near zero while MemAvailable is large: the guard must read the latter,
    or it skips itself on the second load of the same weights (the first load filled the cache)."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:           90000 kB\nMemAvailable:   12000000 kB\n")
    monkeypatch.setattr(dtype_guard, "MEMINFO", meminfo)
    assert dtype_guard.free_memory(torch.device("cpu")) == 12000000 * 1024
    monkeypatch.setattr(dtype_guard, "MEMINFO", tmp_path / "absent")
    assert dtype_guard.free_memory(torch.device("cpu")) > 0  # sysconf fallback


def test_the_guard_gives_the_same_verdict_on_every_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, minilm_path: Path
) -> None:
    """Five loads of the same weights, with the page cache 'full' (MemFree tiny): the guard runs every time and
    reaches the same verdict with the same figures."""
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemFree:           10000 kB\nMemAvailable:   12000000 kB\n")
    monkeypatch.setattr(dtype_guard, "MEMINFO", meminfo)
    verdicts = []
    for _ in range(5):
        model = Reranker.from_pretrained(str(minilm_path), device="cpu")
        verdicts.append((model.info.dtype, model.info.dtype_check))
    assert verdicts[0][1] is not None  # checked, not skipped
    assert verdicts == [verdicts[0]] * 5
    assert verdicts[0][0] == "bfloat16" and verdicts[0][1].passed


def test_an_unchecked_reduced_dtype_says_so(
    monkeypatch: pytest.MonkeyPatch, bert_ce: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    monkeypatch.setattr(dtype_guard, "free_memory", lambda device: 1024)
    with caplog.at_level("WARNING", logger="rerankd.runtime.dtype_guard"):
        model = Reranker.from_pretrained(str(bert_ce), device="cpu")
    assert model.info.dtype == "bfloat16" and model.info.dtype_check is None
    (record,) = [r for r in caplog.records if r.name == "rerankd.runtime.dtype_guard"]
    assert "no room to check the reduced dtype" in record.getMessage() and "loading it unchecked" in record.getMessage()


def test_the_guard_fallback_names_the_failed_criteria(caplog: pytest.LogCaptureFixture) -> None:
    state = {"dtype": torch.float32}
    scores = {torch.float32: [0.1, 0.5, 0.9, 0.3], torch.bfloat16: [0.1, 0.5, 0.9, 0.4]}

    def cast(dtype: torch.dtype) -> None:
        state["dtype"] = dtype

    with caplog.at_level("WARNING", logger="rerankd.runtime.dtype_guard"):
        chosen, agreement = guard_reduced_precision(lambda: scores[state["dtype"]], cast, torch.bfloat16)
    assert chosen is torch.float32 and not agreement.passed
    assert agreement.relative_error == pytest.approx(0.1 / 0.8)
    assert agreement.failures == ("max error 12.50% of the spread", "mean relative error 8.33% on meaningful scores")
    assert "max error 12.50% of the spread" in caplog.text
