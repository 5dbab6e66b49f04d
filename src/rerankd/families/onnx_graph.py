"""Turn a loaded encoder (transformers model) into an ONNX graph, and an fp32 graph into a dynamic int8 one.

The graph takes ``input_ids``, ``attention_mask`` and, when the tokenizer produces them, ``token_type_ids``
(int64, dynamic ``batch`` and ``sequence`` axes) and returns one output: ``logits`` ``(batch, labels)`` for a
cross-encoder, ``last_hidden_state`` ``(batch, sequence, hidden)`` for a bi-encoder, whose pooling stays in
the family code so both backends share it. Export uses torch's TorchScript-based exporter (``dynamo=False``:
no onnxscript needed), traced on a padded sample batch so the attention mask is part of the graph.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from rerankd.errors import MissingDependency
from rerankd.families.base import OnnxOutput

logger = logging.getLogger(__name__)

OPSET = 17
# Bumped whenever the exported computation changes (2: cross-encoders' last layer computes position 0 only), so
# graphs cached by an older rerankd are not reused.
GRAPH_VERSION = 2
ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
OutputName = OnnxOutput
_TWO_GB = 2 * 1024**3


class _NamedForward(torch.nn.Module):
    """Positional tensors in, one named output tensor out: the shape torch.onnx.export traces."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str], output: OutputName) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)
        self.output = output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        outputs = self.model(**dict(zip(self.input_names, tensors, strict=True)), return_dict=True)
        result: torch.Tensor = outputs[self.output]
        return result


def sample_inputs(input_names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """A batch of two, the second row padded, so tracing records the masking path."""
    ids = torch.tensor([[4, 5, 6, 7, 8, 9, 10, 11], [4, 5, 6, 7, 0, 0, 0, 0]], dtype=torch.long)
    mask = torch.tensor([[1] * 8, [1] * 4 + [0] * 4], dtype=torch.long)
    types = torch.tensor([[0] * 4 + [1] * 4, [0] * 2 + [1] * 2 + [0] * 4], dtype=torch.long)
    by_name = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return tuple(by_name[name] for name in input_names)


def export_model(model: torch.nn.Module, path: Path, input_names: Sequence[str], output: OutputName) -> Path:
    """Write ``model`` (float32, CPU) as an ONNX graph at ``path``; returns ``path``."""
    if importlib.util.find_spec("onnx") is None:  # torch's exporter would fail deep inside with a traceback
        raise MissingDependency("exporting an ONNX graph needs the onnx package: pip install 'rerankd[onnx]'")
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ValueError(f"export needs a float32 CPU model, got {parameter.dtype} on {parameter.device}")
    wrapper = _NamedForward(model, input_names, output).eval()
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "sequence"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape checks and the exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            sample_inputs(input_names),
            str(path),
            input_names=list(input_names),
            output_names=[output],
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    logger.info("exported %s (%s -> %s) to %s", type(model).__name__, ", ".join(input_names), output, path)
    return path


def quantize_onnx(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of the graph's weight MatMuls (the Linear layers): int8 weights, per-row
    scales, uint8 activations quantised at run time. Embeddings, LayerNorm and softmax stay float32."""
    quantization = _onnxruntime_quantization()
    large = _folder_bytes(source.parent) >= _TWO_GB
    target.parent.mkdir(parents=True, exist_ok=True)
    with _without_preprocessing_hint():
        quantization.quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul"],
            per_channel=True,  # per-row weight scales: min cosine to fp32 0.978 vs 0.936 per-tensor (MiniLM)
            reduce_range=False,
            weight_type=quantization.QuantType.QInt8,
            use_external_data_format=large,
            extra_options={"MatMulConstBOnly": True},  # only x @ W (Linear layers), never q @ k
        )
    logger.info("quantised %s to int8 at %s", source, target)
    return target


def _folder_bytes(folder: Path) -> int:
    """Upper bound on a graph's size with its external data (exports over 2 GB keep weights beside it)."""
    return sum(file.stat().st_size for file in folder.iterdir() if file.is_file())


class _PreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "consider to run pre-processing" not in record.getMessage()


@contextmanager
def _without_preprocessing_hint() -> Iterator[None]:
    """onnxruntime logs a pre-processing hint on the root logger; its shape inference fails on transformer
    graphs (incomplete symbolic shapes), so the hint is noise here."""
    hint = _PreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


def _onnxruntime_quantization() -> Any:
    try:
        from onnxruntime import quantization
    except ImportError as exc:
        raise MissingDependency(
            "int8 quantisation of ONNX graphs needs onnxruntime: pip install 'rerankd[onnx]'"
        ) from exc
    return quantization
