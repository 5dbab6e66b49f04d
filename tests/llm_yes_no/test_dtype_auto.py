"""dtype="auto" on a bf16-capable CPU: the guard casts the decoder body only; the yes/no head row stays float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.runtime import dtype_guard
from rerankd.runtime.dtype_guard import PROBE_PAIRS, Agreement


@pytest.mark.parametrize("fixture", ["qwen_path", "gemma_path"])
def test_bf16_body_fp32_head(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, fixture: str) -> None:
    path = str(request.getfixturevalue(fixture))
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    monkeypatch.setattr(dtype_guard, "compare_scores", lambda *a, **k: Agreement(1.0, 0.0, True))
    model = Reranker.from_pretrained(path, device="cpu")
    family = model.family
    assert model.info.dtype == "bfloat16"
    assert {p.dtype for p in family.decoder.model.parameters()} == {torch.bfloat16}  # type: ignore[union-attr]
    assert family.head.dtype is torch.float32  # type: ignore[union-attr]
    reference = Reranker.from_pretrained(path, device="cpu", dtype="float32").score(PROBE_PAIRS)
    assert np.allclose(model.score(PROBE_PAIRS), reference, atol=0.05)
