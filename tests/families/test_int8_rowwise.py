"""Row-wise int8 (``quantize="int8"`` on the torch backend): accuracy against float32 on the real
all-MiniLM-L6-v2, batch invariance of the int8 Linear layer, and the tiny cross-encoder end to end."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from rerankd import Reranker
from rerankd.errors import UnsupportedModel
from rerankd.families.base import ModelOptions
from rerankd.families.bi_encoder import BiEncoderFamily
from rerankd.families.int8 import RowwiseInt8Linear, activation_levels, has_int8_layers
from tests.onnx.conftest import load
from tests.onnx.texts import all_pairs

MIXED = [
    "The giant panda is a bear species endemic to China.",
    "hi",
    " ".join(["A very long passage about rivers, forests and mountains."] * 12),
    "Paris is the capital and most populous city of France.",
]


@pytest.fixture(scope="module")
def fp32(minilm_path: Path) -> Reranker:
    return load(minilm_path)


@pytest.fixture(scope="module")
def int8(minilm_path: Path) -> Reranker:
    return load(minilm_path, ModelOptions(quantize="int8"))


@pytest.fixture(scope="module")
def fp32_scores(fp32: Reranker) -> np.ndarray:
    return np.array(fp32.score(all_pairs()))


def test_rowwise_int8_tracks_float32_where_dynamic_int8_does_not(
    fp32: Reranker, int8: Reranker, fp32_scores: np.ndarray
) -> None:
    # measured on these 300 pairs (AMD EPYC, VNNI): rowwise 0.9992 (7-bit activations, non-VNNI CPUs: 0.998),
    # torch.ao quantize_dynamic 0.960; docs/backends.md
    scores = np.array(int8.score(all_pairs()))
    assert has_int8_layers(int8.family.model)  # type: ignore[attr-defined]
    assert 1e-4 < np.abs(scores - fp32_scores).max() < 0.02
    assert spearmanr(scores, fp32_scores).statistic >= 0.998

    family = fp32.family
    assert isinstance(family, BiEncoderFamily)
    float_model = family.model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(float_model), {torch.nn.Linear}, torch.qint8)
    family.model = dynamic
    try:
        dynamic_scores = np.array(fp32.score(all_pairs()))
    finally:
        family.model = float_model
    assert spearmanr(dynamic_scores, fp32_scores).statistic < 0.998


def test_int8_linear_quantises_each_row_on_its_own() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    layer = RowwiseInt8Linear(linear, torch.rand(64) * 4, activation_levels())
    rows = torch.randn(2, 9, 64) * torch.linspace(0.1, 30, 9)[None, :, None]  # rows of very different ranges
    with torch.inference_mode():
        together = layer(rows)
        alone = torch.stack([torch.stack([layer(row[None])[0] for row in batch]) for batch in rows])
        reference = linear(rows)
    assert torch.equal(together, alone)
    error = (together - reference).abs().amax(dim=-1) / reference.abs().amax(dim=-1)
    assert error.max() < 0.05  # a random 64-wide layer


def test_a_pair_barely_moves_with_its_batch(int8: Reranker) -> None:
    family = int8.family
    assert isinstance(family, BiEncoderFamily)
    encoded = family.encode_texts(MIXED, "document")
    with torch.inference_mode():
        together = family.embed(encoded).numpy()
        alone = np.concatenate([family.embed([e]).numpy() for e in encoded])
    # the int8 matmul is row-exact; float32 attention over padding differs by ~1e-7 and int8 rounding can amplify
    # that (measured 3e-3 with 8-bit, 6e-3 with 7-bit activations; torch.ao dynamic int8: 6e-2)
    assert np.abs(together - alone).max() <= 0.015


def test_tiny_cross_encoder_loads_int8_and_scores_finite(bert_ce: Path) -> None:
    model = load(bert_ce, ModelOptions(quantize="int8"))
    assert any(isinstance(m, RowwiseInt8Linear) for m in model.family.model.modules())  # type: ignore[attr-defined]
    scores = np.array(model.score([("what is panda?", "a bear"), ("hi", "hello there, how are you?")]))
    assert np.isfinite(scores).all() and scores.shape == (2,)
    with pytest.raises(UnsupportedModel):
        model.family.weights()  # type: ignore[attr-defined]


def test_activation_levels_follow_vnni() -> None:
    assert activation_levels({"avx2", "avx512_vnni"}) == 255
    assert activation_levels({"avx2", "fma"}) == 127
