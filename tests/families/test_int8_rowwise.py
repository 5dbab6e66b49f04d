"""Row-wise int8 (``quantize="int8"`` on the torch backend): accuracy against float32 on the real
all-MiniLM-L6-v2 (Spearman >= 0.999 on two pair sets), batch invariance of the int8 Linear layer, and the tiny
cross-encoder end to end."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from transformers import AutoTokenizer

from rerankd import Reranker
from rerankd.bench.workloads import rerank_100
from rerankd.errors import UnsupportedModel
from rerankd.families.base import ModelOptions
from rerankd.families.bi_encoder import BiEncoderFamily
from rerankd.families.encoder_backend import calibration_run
from rerankd.families.int8 import RowwiseInt8Linear, activation_levels, has_int8_layers, quantize_rowwise
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
    # measured on these 300 pairs (AMD EPYC): rowwise 0.9997 with 8- and 7-bit activations (0.9991 / 0.9979
    # before outlier channels and the residual pass), torch.ao quantize_dynamic 0.960; docs/backends.md
    scores = np.array(int8.score(all_pairs()))
    assert has_int8_layers(int8.family.model)  # type: ignore[attr-defined]
    assert 1e-4 < np.abs(scores - fp32_scores).max() < 0.01
    assert spearmanr(scores, fp32_scores).statistic >= 0.999

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


def test_outlier_channels_and_residual_pass_reach_0999_on_rerank_100(
    minilm_path: Path, fp32: Reranker, int8: Reranker
) -> None:
    # rerank-100's random-word passages score close together (fp32 spread 0.26), so ranks flip easily: measured
    # 0.9994 with the defaults (32 float channels, 2 passes), 0.9952 with 8-bit activations and no float channels
    pairs = rerank_100().pairs
    reference = np.array(fp32.score(pairs))
    assert spearmanr(np.array(int8.score(pairs)), reference).statistic >= 0.999

    family = fp32.family
    assert isinstance(family, BiEncoderFamily)
    float_model = family.model
    plain = copy.deepcopy(float_model)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    quantize_rowwise(plain, lambda: calibration_run(plain, tokenizer), float_channels=0, passes=1)
    family.model = plain
    try:
        plain_scores = np.array(fp32.score(pairs))
    finally:
        family.model = float_model
    assert spearmanr(plain_scores, reference).statistic < 0.998


def test_outlier_channels_and_residual_pass_cut_one_layers_error() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 64)
    rows = torch.randn(40, 256)
    rows[:, :6] *= 40  # a few outlier input channels, as LayerNorm and GELU outputs have
    absmax = rows.abs().amax(dim=0)
    with torch.inference_mode():
        reference = linear(rows)

        def error(float_channels: int, passes: int) -> float:
            layer = RowwiseInt8Linear(linear, absmax, activation_levels(), float_channels, passes)
            return float((layer(rows) - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt())

        plain, outliers, both = error(0, 1), error(32, 1), error(32, 2)
    # measured 5.8e-3, 9.7e-4, 6.0e-4 (the int8 weights' own error remains in the last)
    assert outliers < plain / 3 and both < outliers * 0.8


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
