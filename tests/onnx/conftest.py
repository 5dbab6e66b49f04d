"""ONNX backend fixtures: an isolated graph cache, exported tiny cross-encoders and a loader helper."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rerankd import Reranker
from rerankd.export import ExportReport, export_onnx
from rerankd.families.base import ModelOptions
from rerankd.families.bi_encoder import BiEncoderFamily
from rerankd.families.cross_encoder import CrossEncoderFamily
from rerankd.families.onnx_runtime import OnnxForward
from rerankd.loading import resolve_model
from rerankd.registry import detect_family
from rerankd.reranker import ModelInfo

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
    """Load through the family loaders (what ``Reranker.from_pretrained`` will call) and wrap in a Reranker."""
    files = resolve_model(str(path))
    spec = detect_family(files)
    family = spec.load(files, torch.device(device), dtype, options or ModelOptions(), False)
    info = ModelInfo(
        name=str(path),
        path=str(files.path),
        family=spec.name,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        max_length=family.limits.max_length,
        load_seconds=0.0,
    )
    return Reranker(family, info, normalize=False)


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
