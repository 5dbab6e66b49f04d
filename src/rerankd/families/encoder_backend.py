"""What runs an encoder family's forward pass: a torch module (optionally dynamic int8) or an ONNX Runtime
session. The families call :func:`encoder_model` in their loaders and :func:`model_device` in their
constructors; everything else in them (tokenisation, truncation, pooling) is shared by both backends.

- ``backend="torch"``: the transformers model on the requested device and dtype; in bfloat16 on a CPU its Linear
  layers run on oneDNN-packed weights with GELU fused (:mod:`rerankd.families.packed_linear`).
- ``backend="onnx"``: :class:`~rerankd.families.onnx_runtime.OnnxForward` over a float32 graph (CPU or CUDA
  execution provider); see that module for where the graph comes from.
- ``quantize="int8"`` (CPU, float32 only): int8 Linear layers. Torch backend: row-wise int8
  (:mod:`rerankd.families.int8`: per-token-row activation ranges, per-channel weights, SmoothQuant scaling
  calibrated by one float run over :data:`~rerankd.families.int8.CALIBRATION_PAIRS`); ONNX backend:
  onnxruntime's ``quantize_dynamic`` (one activation scale per batch). Figures: docs/backends.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rerankd.errors import DeviceUnavailable, InvalidInput
from rerankd.families.base import ModelOptions, OnnxOutput
from rerankd.families.int8 import CALIBRATION_PAIRS, quantize_rowwise
from rerankd.families.onnx_runtime import onnx_forward
from rerankd.families.packed_linear import pack_linears


def check_backend(options: ModelOptions, device: torch.device, dtype: torch.dtype) -> None:
    """Reject backend / quantisation choices that cannot run, before any weights are read."""
    if options.backend not in ("torch", "onnx"):
        raise InvalidInput(f"unknown backend {options.backend!r}; use 'torch' or 'onnx'", param="backend")
    if options.quantize not in (None, "int8"):
        raise InvalidInput(f"unknown quantize {options.quantize!r}; use None or 'int8'", param="quantize")
    if options.quantize == "int8" and device.type != "cpu":
        raise InvalidInput(
            f"quantize='int8' runs on CPU only (fbgemm / onnxruntime int8 kernels), not on {device}; on "
            "accelerators use dtype='float16' or 'bfloat16'",
            param="quantize",
        )
    if (options.backend == "onnx" or options.quantize) and dtype != torch.float32:
        what = "quantize='int8'" if options.quantize else "backend='onnx'"
        raise InvalidInput(
            f"{what} starts from float32 weights; got dtype={str(dtype).removeprefix('torch.')}, pass dtype='float32'",
            param="dtype",
        )
    if options.backend == "onnx" and device.type not in ("cpu", "cuda"):
        raise DeviceUnavailable(f"backend='onnx' runs on cpu or cuda devices, not {device}")


def input_names(uses_token_types: bool) -> tuple[str, ...]:
    """The graph inputs of an encoder: token types only when the tokenizer produces them."""
    return ("input_ids", "attention_mask", "token_type_ids") if uses_token_types else ("input_ids", "attention_mask")


def uses_token_types(tokenizer: Any) -> bool:
    return "token_type_ids" in tokenizer.model_input_names


def encoder_model(
    folder: Path,
    build: Callable[[], torch.nn.Module],
    tokenizer: Any,
    output: OnnxOutput,
    device: torch.device,
    dtype: torch.dtype,
    options: ModelOptions,
) -> Any:
    """The object an encoder family calls as ``model(**inputs)``: a torch module or an ONNX forward.

    ``build`` loads the transformers model (on the CPU, in ``dtype``); with ``backend="onnx"`` it is only
    called when ``folder`` has no graph yet and one must be exported; ``output`` is the graph output the family
    reads (its spec's ``Capabilities.onnx_output``).
    """
    check_backend(options, device, dtype)
    if options.backend == "onnx":
        names = input_names(uses_token_types(tokenizer))
        return onnx_forward(folder, build, device, options.quantize, names, output)
    model = build()
    model.to(device).eval()
    if options.quantize == "int8":
        return quantize_int8(model, tokenizer)
    if device.type == "cpu" and dtype == torch.bfloat16:
        pack_linears(model)  # oneDNN-packed weights, GELU fused (rerankd.families.packed_linear)
    return model


def quantize_int8(model: torch.nn.Module, tokenizer: Any) -> torch.nn.Module:
    """Row-wise int8 Linear layers (in place; CPU, float32 models), calibrated on the float model."""
    return quantize_rowwise(model, lambda: calibration_run(model, tokenizer))


def calibration_run(model: torch.nn.Module, tokenizer: Any) -> None:
    """The float model over :data:`CALIBRATION_PAIRS`, each input alone (no padding rows in the ranges): every
    pair as a cross-encoder sees it, and every text alone as a bi-encoder sees it."""
    texts = {text for pair in CALIBRATION_PAIRS for text in pair}
    inputs: list[tuple[str, ...]] = [*CALIBRATION_PAIRS, *((text,) for text in sorted(texts))]
    for text in inputs:
        encoded = tokenizer(*text, truncation=True, max_length=128, return_tensors="pt")
        model(**{name: encoded[name] for name in tokenizer.model_input_names if name in encoded})


def model_device(model: Any) -> torch.device:
    """Where a family must put its input tensors: the torch model's device, or the ONNX forward's."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device
