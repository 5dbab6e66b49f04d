"""dtype="auto" on a bf16-capable CPU: MiniCPM bodies go bf16, the scoring heads stay float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rerankd import Reranker
from rerankd.runtime import dtype_guard
from rerankd.runtime.dtype_guard import PROBE_PAIRS, Agreement


@pytest.mark.parametrize(("fixture", "head"), [("layerwise_path", "lm_head."), ("minicpm_reranker_path", "score.")])
def test_bf16_body_fp32_heads(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, fixture: str, head: str
) -> None:
    path = str(request.getfixturevalue(fixture))
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    monkeypatch.setattr(dtype_guard, "compare_scores", lambda *a, **k: Agreement(1.0, 0.0, True))
    model = Reranker.from_pretrained(path, device="cpu")
    assert model.info.dtype == "bfloat16"
    params = dict(model.family.network.named_parameters())  # type: ignore[union-attr]
    assert {p.dtype for name, p in params.items() if name.startswith(head)} == {torch.float32}
    assert {p.dtype for name, p in params.items() if not name.startswith(head)} == {torch.bfloat16}
    reference = Reranker.from_pretrained(path, device="cpu", dtype="float32").score(PROBE_PAIRS)
    assert np.allclose(model.score(PROBE_PAIRS), reference, atol=0.05)
