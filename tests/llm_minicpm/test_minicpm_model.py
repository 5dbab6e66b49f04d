"""rerankd's MiniCPM body on its own: the scored-row shortcut and early exit agree with full computation."""

from __future__ import annotations

import pytest
import torch

from rerankd.families.minicpm_model import MiniCPMConfig, MiniCPMModel
from tests.llm_minicpm.tiny_minicpm import body_config


def _model(causal: bool) -> MiniCPMModel:
    torch.manual_seed(0)
    model = MiniCPMModel(MiniCPMConfig.from_dict(body_config(50), causal=causal)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("causal", [True, False])
@torch.no_grad()
def test_scored_rows_equal_full_sequences(causal: bool) -> None:
    model = _model(causal)
    ids = torch.randint(3, 50, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, :4] = 0  # left padding
    mask[2, 6:] = 0  # right padding
    rows = torch.tensor([8, 8, 5])
    full = model(ids, mask, n_layers=6, keep_layers=[0, 2, 6])
    picked = model(ids, mask, n_layers=6, keep_layers=[0, 2, 6], rows=rows)
    for whole, row in zip(full, picked, strict=True):
        assert torch.allclose(whole[torch.arange(3), rows], row, atol=1e-5)
        assert torch.isfinite(whole).all()


@torch.no_grad()
def test_early_exit_equals_the_prefix_of_a_deeper_run() -> None:
    model = _model(True)
    ids, mask = torch.randint(3, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    deep = model(ids, mask, keep_layers=[3, 10])
    shallow = model(ids, mask, n_layers=3)
    assert torch.allclose(deep[0], shallow[0], atol=1e-6)


def test_keep_layers_must_be_within_the_run() -> None:
    model = _model(True)
    ids, mask = torch.randint(3, 50, (1, 4)), torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError):
        model(ids, mask, n_layers=3, keep_layers=[4])
    with pytest.raises(ValueError):
        model(ids, mask, n_layers=11)
