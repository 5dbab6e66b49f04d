"""``export_onnx``: write an encoder model as a self-contained ONNX model folder (what ``rerankd export --onnx``
calls).

The folder gets the graph (``model.onnx``; ``model_int8.onnx`` too with ``quantize="int8"``) plus every
non-weight file of the source (config, tokenizer, sentence-transformers pooling metadata, README/licence), so
it loads with ``backend="onnx"`` like any model folder and needs no torch weights. The export is checked on
a few probe inputs against the torch model before returning; the report carries the differences.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

import torch

from rerankd.errors import InvalidInput, UnsupportedModel
from rerankd.families.base import DEFAULT_CALL, Embedder, Family, ModelOptions, OnnxExportable, PairScorer
from rerankd.families.encoder_backend import input_names
from rerankd.families.onnx_graph import INT8_FILE, ONNX_FILE, export_model, quantize_onnx
from rerankd.loading import resolve_model
from rerankd.registry import detect_family, families

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".data", ".ot"}
PROBE_QUERY = "what is the capital of france?"
PROBE_DOCS = (
    "Paris is the capital and largest city of France.",
    "hi",
    "The giant panda is a bear species endemic to China; it lives in bamboo forests in the mountains.",
)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely the graphs match the torch model on the probe inputs."""

    folder: Path
    family: str
    graph: Path
    inputs: tuple[str, ...]
    output: str
    max_abs_diff: float
    int8_graph: Path | None = None
    int8_max_abs_diff: float | None = None


def export_onnx(
    model: str,
    out: str | Path,
    *,
    family: str | None = None,
    quantize: Literal["int8"] | None = None,
    trust_remote_code: bool = False,
    overwrite: bool = False,
) -> ExportReport:
    """Export ``model`` (folder, hub id or packaged name) to the ONNX model folder ``out``."""
    files = resolve_model(model)
    spec = detect_family(files, family)
    output = spec.capabilities.onnx_output
    if output is None:
        capable = ", ".join(s.name for s in families() if s.capabilities.onnx_output is not None)
        raise UnsupportedModel(f"ONNX export supports {capable} models, not {spec.name}")
    target = Path(out).expanduser().resolve()
    cpu = torch.device("cpu")
    reference = spec.load(files, cpu, torch.float32, ModelOptions(), trust_remote_code)
    exportable = cast(OnnxExportable, reference)
    graph_dir = target / (exportable.model_dir or files.path).relative_to(files.path)
    if (graph_dir / ONNX_FILE).exists() and not overwrite:
        raise InvalidInput(f"{graph_dir / ONNX_FILE} exists; pass overwrite=True (CLI: --force) to replace it")
    copy_model_files(files.path, target)
    names = input_names(exportable.uses_token_types)
    graph = export_model(exportable.model, graph_dir / ONNX_FILE, names, output)
    int8 = quantize_onnx(graph, graph_dir / INT8_FILE) if quantize == "int8" else None
    exported = resolve_model(str(target))
    want = probe(reference)

    def diff(quantized: Literal["int8"] | None) -> float:
        options = ModelOptions(backend="onnx", quantize=quantized)
        loaded = spec.load(exported, cpu, torch.float32, options, trust_remote_code)
        return float((probe(loaded) - want).abs().max())

    return ExportReport(
        folder=target,
        family=spec.name,
        graph=graph,
        inputs=names,
        output=output,
        max_abs_diff=diff(None),
        int8_graph=int8,
        int8_max_abs_diff=diff("int8") if int8 is not None else None,
    )


def probe(family: Family) -> torch.Tensor:
    """A family's raw outputs on fixed probe inputs: scores of a cross-encoder, embeddings of a bi-encoder."""
    with torch.inference_mode():
        if isinstance(family, Embedder):
            return family.embed(family.encode_texts([PROBE_QUERY, *PROBE_DOCS], "document"))
        assert isinstance(family, PairScorer)
        return family.score(family.encode_pairs(PROBE_QUERY, PROBE_DOCS, DEFAULT_CALL), DEFAULT_CALL)


def copy_model_files(source: Path, target: Path) -> list[Path]:
    """Copy every file but weights and graphs (config, tokenizer, pooling metadata, README) into ``target``."""
    copied = []
    for file in sorted(source.rglob("*")):
        relative = file.relative_to(source)
        if not file.is_file() or file.suffix in _WEIGHT_SUFFIXES or _hidden(relative):
            continue
        destination = target / relative
        if destination.resolve() == file.resolve():
            continue  # exporting into the model's own folder
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, destination)
        copied.append(destination)
    logger.info("copied %d model files from %s to %s", len(copied), source, target)
    return copied


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts) or relative.parts[0] == "onnx"
