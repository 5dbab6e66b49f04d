"""ONNX backend fixtures: an isolated graph cache, exported tiny cross-encoders and a loader helper."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from rerankd import Reranker
from rerankd.export import ExportReport, export_onnx
from rerankd.families.base import ModelOptions
from rerankd.families.bi_encoder import BiEncoderFamily
from rerankd.families.cross_encoder import CrossEncoderFamily
from rerankd.families.onnx_runtime import OnnxForward

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Graphs exported on the fly go to a temporary cache, never to ~/.cache."""
    folder = tmp_path_factory.mktemp("onnx-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RERANKD_ONNX_CACHE", str(folder))
        yield folder


def load(
    path: Path | str,
    options: ModelOptions | None = None,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Reranker:
    """``Reranker.from_pretrained`` with explicit family options, raw scores."""
    model_options = asdict(options) if options is not None else {}
    return Reranker.from_pretrained(str(path), device=device, dtype=dtype, normalize=False, **model_options)


def onnx_forward_of(model: Reranker) -> OnnxForward:
    """The ONNX forward a loaded encoder family runs (fails if it runs torch)."""
    family = model.family
    assert isinstance(family, (CrossEncoderFamily, BiEncoderFamily))
    assert isinstance(family.model, OnnxForward)
    return family.model


@pytest.fixture(scope="session")
def bert_onnx(bert_ce: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    return export_onnx(str(bert_ce), tmp_path_factory.mktemp("bert-onnx"), quantize="int8")


@pytest.fixture(scope="session")
def xlmr_onnx(xlmr_ce: Path, tmp_path_factory: pytest.TempPathFactory) -> ExportReport:
    return export_onnx(str(xlmr_ce), tmp_path_factory.mktemp("xlmr-onnx"), quantize="int8")
