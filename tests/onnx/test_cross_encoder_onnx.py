"""ONNX Runtime backend for encoder cross-encoders: export, parity with torch, truncation, padding, errors."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import torch

from rerankd.errors import InvalidInput, MissingDependency, ModelNotFound
from rerankd.export import ExportReport, export_onnx
from rerankd.families.base import ModelOptions
from rerankd.families.cross_encoder import CrossEncoderFamily
from rerankd.families.onnx_runtime import create_session
from tests.onnx.conftest import load, onnx_forward_of
from tests.tiny_models import corpus

QUERY = "What is the giant panda bear of china?"
LONG_QUERY = " ".join(["where is the capital city of france and what river"] * 12)
ONNX = ModelOptions(backend="onnx")
Backend = Literal["torch", "onnx"]


def _pairs() -> list[tuple[str, str]]:
    docs = corpus(seed=3, n=10, min_words=3, max_words=40) + corpus(seed=4, n=3, min_words=90, max_words=160)
    return [(QUERY, d) for d in docs] + [(LONG_QUERY, d) for d in docs[:4]]


def _report(kind: str, bert_onnx: ExportReport, xlmr_onnx: ExportReport) -> ExportReport:
    return bert_onnx if kind == "bert" else xlmr_onnx


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
def test_export_writes_a_self_contained_model_folder(
    kind: str, bert_onnx: ExportReport, xlmr_onnx: ExportReport
) -> None:
    report = _report(kind, bert_onnx, xlmr_onnx)
    names = {p.name for p in report.folder.iterdir()}
    assert {"model.onnx", "model_int8.onnx", "config.json", "tokenizer_config.json"} <= names
    assert not any(name.endswith((".safetensors", ".bin")) for name in names)
    session = create_session(report.graph, torch.device("cpu"))
    inputs = [node.name for node in session.get_inputs()]
    # BERT's pair template carries token types; XLM-R's tokenizer does not produce them
    plain = ["input_ids", "attention_mask"]
    assert inputs == ([*plain, "token_type_ids"] if kind == "bert" else plain)
    for node in session.get_inputs():  # batch and sequence axes are symbolic
        assert node.shape == ["batch", "sequence"]
    assert [node.name for node in session.get_outputs()] == ["logits"]
    assert report.max_abs_diff <= 1e-4


@pytest.mark.parametrize("kind", ["bert", "xlmr"])
@pytest.mark.parametrize(("max_length", "truncation"), [(128, "flag"), (48, "flag"), (48, "longest_first")])
def test_exported_folder_matches_torch(
    kind: str,
    max_length: int,
    truncation: Literal["flag", "longest_first"],
    bert_ce: Path,
    xlmr_ce: Path,
    bert_onnx: ExportReport,
    xlmr_onnx: ExportReport,
) -> None:
    source = bert_ce if kind == "bert" else xlmr_ce
    torch_model = load(source, ModelOptions(max_length=max_length, truncation=truncation))
    options = ModelOptions(backend="onnx", max_length=max_length, truncation=truncation)
    onnx_model = load(_report(kind, bert_onnx, xlmr_onnx).folder, options)
    onnx_forward_of(onnx_model)
    pairs = _pairs()
    want = np.array(torch_model.score(pairs))
    got = np.array(onnx_model.score(pairs))
    assert np.abs(got - want).max() <= 1e-4
    assert np.argsort(-got).tolist() == np.argsort(-want).tolist()
    assert want.std() > 0.1
    items = onnx_model.prepare_pairs(pairs).items
    truncated = sum(item.truncated for item in items)
    assert 0 < truncated < len(items)  # truncated and whole inputs in the same comparison


def test_batch_invariance_with_padding(bert_onnx: ExportReport) -> None:
    model = load(bert_onnx.folder, ONNX)
    family = model.family
    assert isinstance(family, CrossEncoderFamily)
    pairs = _pairs()
    encoded = family.encode_pairs(QUERY, [doc for _, doc in pairs])
    lengths = {len(e) for e in encoded}
    assert len(lengths) > 5  # one batch holds very different lengths: lots of padding
    together = family.score(encoded)
    reversed_ = family.score(encoded[::-1]).flip(0)
    alone = torch.cat([family.score([e]) for e in encoded])
    assert (together - alone).abs().max() <= 1e-5
    assert (together - reversed_).abs().max() <= 1e-5


def test_on_the_fly_export_goes_to_the_cache_once(xlmr_ce: Path, onnx_cache: Path) -> None:
    first = load(xlmr_ce, ONNX)
    graph = onnx_forward_of(first).path
    assert graph.is_relative_to(onnx_cache) and graph.name == "model.onnx"
    assert not any(xlmr_ce.glob("*.onnx"))  # the model folder itself is left alone
    stamp = graph.stat().st_mtime_ns
    second = load(xlmr_ce, ONNX)
    assert onnx_forward_of(second).path == graph and graph.stat().st_mtime_ns == stamp
    pairs = _pairs()[:6]
    assert np.allclose(second.score(pairs), load(xlmr_ce).score(pairs), atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_int8_runs_and_keeps_scores_finite(backend: Backend, bert_ce: Path) -> None:
    model = load(bert_ce, ModelOptions(backend=backend, quantize="int8"))
    fp32 = np.array(load(bert_ce).score(_pairs()))
    int8 = np.array(model.score(_pairs()))
    assert np.isfinite(int8).all() and int8.shape == fp32.shape
    assert not np.allclose(int8, fp32, atol=1e-4)  # really quantised
    # a 32-wide random model is the worst case for int8; the real-weights closeness check is on MiniLM
    assert np.corrcoef(int8, fp32)[0, 1] > 0.8


def test_int8_graph_from_the_export_is_used(bert_onnx: ExportReport) -> None:
    model = load(bert_onnx.folder, ModelOptions(backend="onnx", quantize="int8"))
    assert onnx_forward_of(model).path == bert_onnx.int8_graph
    assert bert_onnx.int8_max_abs_diff is not None and bert_onnx.int8_max_abs_diff > 1e-4


@pytest.mark.parametrize("backend", ["torch", "onnx"])
@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_int8_refuses_non_cpu_devices(backend: Backend, device: str, bert_ce: Path) -> None:
    with pytest.raises(InvalidInput, match="CPU only") as error:
        load(bert_ce, ModelOptions(backend=backend, quantize="int8"), device=device)
    assert error.value.param == "quantize"


@pytest.mark.parametrize("options", [ModelOptions(backend="onnx"), ModelOptions(quantize="int8")])
def test_onnx_and_int8_need_float32(options: ModelOptions, bert_ce: Path) -> None:
    with pytest.raises(InvalidInput, match="float32"):
        load(bert_ce, options, dtype=torch.bfloat16)


def test_folder_without_graph_or_weights_is_a_typed_error(bert_onnx: ExportReport, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(bert_onnx.folder, bare, ignore=shutil.ignore_patterns("*.onnx"))
    with pytest.raises(ModelNotFound, match=r"no ONNX graph \(model.onnx\) and no torch weights"):
        load(bare, ONNX)


def test_export_errors(bert_ce: Path, bert_onnx: ExportReport, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        export_onnx(str(tmp_path / "nowhere"), tmp_path / "out", family="cross-encoder")
    with pytest.raises(InvalidInput, match="exists"):
        export_onnx(str(bert_ce), bert_onnx.folder)


def test_missing_onnxruntime_names_the_extra(bert_ce: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` sees when not installed
    with pytest.raises(MissingDependency, match=r"pip install 'rerankd\[onnx\]'"):
        load(bert_ce, ONNX)
