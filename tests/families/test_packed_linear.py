"""bfloat16 Linear layers on oneDNN-packed weights with GELU fused (rerankd.families.packed_linear): the same
values as ``F.linear`` (+ GELU) to bfloat16 rounding, a row's output independent of its batch, and the encoder
families use it for bf16 on CPU only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from rerankd import Reranker
from rerankd.families.packed_linear import PackedLinear, available, pack_linears

pytestmark = pytest.mark.skipif(not available(), reason="this torch build has no oneDNN (mkldnn) CPU kernels")
BF16_STEP = 2**-7  # bfloat16's relative spacing


def layer(inputs: int = 96, outputs: int = 160, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(inputs, outputs).to(torch.bfloat16)


@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_values_match_linear_to_bf16_rounding(activation: str) -> None:
    linear = layer()
    x = torch.randn(3, 37, 96).to(torch.bfloat16)
    reference = nn.functional.linear(x.float(), linear.weight.float(), linear.bias.float())
    if activation == "gelu":
        reference = nn.functional.gelu(reference)
    got = PackedLinear(linear, activation)(x)
    assert got.dtype == torch.bfloat16 and got.shape == (3, 37, 160)
    scale = reference.abs().max().item()
    assert (got.float() - reference).abs().max().item() <= 2 * BF16_STEP * scale


def test_a_rows_output_does_not_depend_on_its_batch() -> None:
    packed = PackedLinear(layer(), "gelu")
    x = torch.randn(130, 96).to(torch.bfloat16)
    together = packed(x)
    for rows in (slice(0, 1), slice(5, 8), slice(17, 81), slice(129, 130)):
        assert torch.equal(packed(x[rows]), together[rows])
    assert torch.equal(packed(x.view(10, 13, 96)).view(130, 160), together)


def test_pack_linears_fuses_exact_gelu_and_leaves_other_dtypes(bert_ce: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(bert_ce, dtype=torch.bfloat16).eval()
    linears = sum(type(m) is nn.Linear for m in model.modules())
    inputs = {"input_ids": torch.randint(5, 100, (4, 19)), "attention_mask": torch.ones(4, 19, dtype=torch.long)}
    with torch.inference_mode():
        before = model(**inputs).logits.float()
        assert pack_linears(model) == linears
        after = model(**inputs).logits.float()
    assert not any(type(m) is nn.Linear for m in model.modules())
    fused = [m for m in model.modules() if isinstance(m, PackedLinear) and m.activation == "gelu"]
    assert len(fused) == model.config.num_hidden_layers
    assert (after - before).abs().max().item() < 0.05 * max(1.0, before.abs().max().item())
    float32 = AutoModelForSequenceClassification.from_pretrained(bert_ce, dtype=torch.float32)
    assert pack_linears(float32) == 0  # float32 stays on F.linear (packed fp32 rows vary with the batch)


def test_the_bf16_cpu_reranker_runs_packed_and_float32_does_not(bert_ce: Path) -> None:
    def packed(dtype: str) -> int:
        reranker = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype=dtype)
        return sum(isinstance(m, PackedLinear) for m in reranker.family.model.modules())

    assert packed("bfloat16") > 0 and packed("float32") == 0


def test_flop_accounting_counts_packed_weights(bert_ce: Path) -> None:
    """`rerankd bench`'s GFLOP/s and peak fraction: a packed model does the same dense work as the unpacked one."""
    from rerankd.families.first_token import dense_shape

    unpacked = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="bfloat16")
    shape = dense_shape(unpacked.family.model)
    plain = Reranker.from_pretrained(str(bert_ce), device="cpu", dtype="float32")
    assert shape is not None and shape == dense_shape(plain.family.model)
