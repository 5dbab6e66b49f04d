"""ONNX Runtime backend and int8 on the real all-MiniLM-L6-v2 bi-encoder (mean pooling, token types)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pytest
from scipy.stats import spearmanr

from rerankd import Reranker
from rerankd.export import ExportReport, export_onnx
from rerankd.families.base import ModelOptions
from rerankd.families.bi_encoder import BiEncoderFamily
from tests.onnx.conftest import load, onnx_forward_of
from tests.onnx.texts import PASSAGES, all_pairs

TEXTS = [
    "what is panda?",
    "The giant panda is a bear species endemic to China.",
    "hi",
    " ".join(["A very long passage about rivers, forests and mountains."] * 60),  # over 256 tokens: truncated
]


@pytest.fixture(scope="module")
def minilm_onnx(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    return export_onnx(str(minilm_path), tmp_path_factory.mktemp("minilm-onnx"), quantize="int8")


@pytest.fixture(scope="module")
def fp32(minilm_path: Path) -> Reranker:
    return load(minilm_path)


@pytest.fixture(scope="module")
def fp32_scores(fp32: Reranker) -> np.ndarray:
    return np.array(fp32.score(all_pairs()))


def test_export_keeps_the_sentence_transformers_metadata(minilm_onnx: ExportReport) -> None:
    folder = minilm_onnx.folder
    for name in ("modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert not any(folder.glob("*.safetensors"))
    assert minilm_onnx.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert minilm_onnx.output == "last_hidden_state"
    assert minilm_onnx.max_abs_diff <= 1e-4


@pytest.mark.parametrize("max_length", [None, 8])
def test_embeddings_match_torch(max_length: int | None, minilm_path: Path, minilm_onnx: ExportReport) -> None:
    torch_model = load(minilm_path, ModelOptions(max_length=max_length))
    onnx_model = load(minilm_onnx.folder, ModelOptions(backend="onnx", max_length=max_length))
    onnx_forward_of(onnx_model)
    assert onnx_model.info.max_length == torch_model.info.max_length == (max_length or 256)
    assert onnx_model.prepare_embed(TEXTS).cut == ([1, 3] if max_length else [3])
    got, want = onnx_model.embed(TEXTS), torch_model.embed(TEXTS)
    assert np.abs(got - want).max() <= 1e-4


def test_scores_match_torch_and_the_golden_values(minilm_onnx: ExportReport, fp32_scores: np.ndarray) -> None:
    onnx_model = load(minilm_onnx.folder, ModelOptions(backend="onnx"))
    scores = np.array(onnx_model.score(all_pairs()))
    assert np.abs(scores - fp32_scores).max() <= 1e-4
    golden = onnx_model.score([("what is panda?", TEXTS[1]), ("what is panda?", "hi")])
    assert golden == pytest.approx([0.7633221, 0.1101959], abs=1e-4)  # the torch backend's pinned cosines
    ranked = onnx_model.rank("what is panda?", list(PASSAGES))
    assert ranked[0].document.startswith("The giant panda")


def test_batch_invariance_with_padding(minilm_onnx: ExportReport) -> None:
    family = load(minilm_onnx.folder, ModelOptions(backend="onnx")).family
    assert isinstance(family, BiEncoderFamily)
    encoded = family.encode_texts(TEXTS, "document")
    together = family.embed(encoded)
    alone = np.concatenate([family.embed([e]).numpy() for e in encoded])
    assert np.abs(together.numpy() - alone).max() <= 1e-5


@pytest.mark.parametrize(
    ("backend", "max_relative", "min_spearman"),
    # measured on these 300 pairs: onnx 0.044 / 0.987, torch (row-wise int8) 0.008 / 0.999 (docs/backends.md)
    [("onnx", 0.06, 0.98), ("torch", 0.02, 0.998)],
)
def test_int8_stays_close_to_fp32(
    backend: Literal["torch", "onnx"],
    max_relative: float,
    min_spearman: float,
    minilm_path: Path,
    minilm_onnx: ExportReport,
    fp32_scores: np.ndarray,
) -> None:
    source = minilm_onnx.folder if backend == "onnx" else minilm_path  # the int8 graph / the torch weights
    int8 = load(source, ModelOptions(backend=backend, quantize="int8"))
    scores = np.array(int8.score(all_pairs()))
    spread = fp32_scores.max() - fp32_scores.min()
    assert spread > 0.8  # real spread: relevant passages near 0.7, unrelated ones near 0
    relative = np.abs(scores - fp32_scores).max() / spread
    assert 1e-4 < relative <= max_relative
    assert spearmanr(scores, fp32_scores).statistic >= min_spearman
