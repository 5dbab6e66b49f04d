"""ONNX Runtime execution for the encoder families: find or build the graph, open a session, run it.

Both backends share the family code (tokenisation, truncation, collation, pooling); only the call
``self.model(**inputs)`` changes. :class:`OnnxForward` takes the same keyword tensors as a transformers model
and returns an object with the graph's outputs as attributes (``.logits`` or ``.last_hidden_state``).

Where the graph comes from, for a model folder F (the folder with the transformer's config.json):

1. ``F/model.onnx`` or ``F/onnx/model.onnx``: what ``rerankd export --onnx`` writes, or an optimum /
   sentence-transformers export with the same input and output names. With ``quantize="int8"``:
   ``F/model_int8.onnx`` (``rerankd export --onnx --quantize int8``), else the fp32 graph quantised once into
   the cache.
2. Otherwise the torch weights are exported on the fly, once, into the cache folder: ``$RERANKD_ONNX_CACHE``,
   else ``$XDG_CACHE_HOME/rerankd/onnx``, else ``~/.cache/rerankd/onnx``; one sub-folder per model folder,
   keyed on its path, its files' sizes and mtimes, the graph's inputs/output, rerankd's graph version and the
   torch version. A folder with neither a graph nor torch weights raises :class:`~rerankd.errors.ModelNotFound`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Literal

import numpy as np
import torch

from rerankd.errors import DeviceUnavailable, MissingDependency, ModelNotFound, UnsupportedModel
from rerankd.families.onnx_graph import (
    GRAPH_VERSION,
    INT8_FILE,
    ONNX_FILE,
    OPSET,
    OutputName,
    export_model,
    quantize_onnx,
)
from rerankd.hardware import physical_cores

logger = logging.getLogger(__name__)

Quantize = Literal["int8"] | None
_FINGERPRINT_SUFFIXES = {".safetensors", ".bin", ".onnx", ".json", ".data"}


def require_onnxruntime() -> ModuleType:
    """The onnxruntime module, or :class:`MissingDependency` naming the extra."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise MissingDependency("backend='onnx' needs onnxruntime: pip install 'rerankd[onnx]'") from exc
    return onnxruntime


def execution_providers(ort: ModuleType, device: torch.device) -> list[Any]:
    """CPUExecutionProvider on CPU; CUDAExecutionProvider (CPU fallback for unsupported ops) on CUDA."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceUnavailable(
                f"backend='onnx' on {device} needs onnxruntime's CUDA provider: install onnxruntime-gpu in "
                "place of onnxruntime"
            )
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    raise DeviceUnavailable(f"backend='onnx' runs on cpu or cuda devices, not {device}")


def create_session(path: Path, device: torch.device) -> Any:
    """An InferenceSession with all graph optimisations and one intra-op thread per physical core."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the library does not write to the terminal
    providers = execution_providers(ort, device)
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        raise UnsupportedModel(f"onnxruntime cannot load {path}: {exc}") from exc


class OnnxForward:
    """Stands in for the transformers model inside an encoder family."""

    def __init__(self, session: Any, path: Path, output: str) -> None:
        self.session = session
        self.path = path
        # Inputs are handed to onnxruntime as numpy arrays, so the family collates on the CPU; the session
        # copies them to its provider's device.
        self.device = torch.device("cpu")
        self.input_names = tuple(node.name for node in session.get_inputs())
        available = [node.name for node in session.get_outputs()]
        if output not in available:
            raise UnsupportedModel(f"{path} outputs {available}; this family needs {output!r}")
        self.output_names = (output,)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self.session.get_providers())

    def __call__(self, **inputs: torch.Tensor) -> SimpleNamespace:
        outputs = self.session.run(list(self.output_names), self._feed(inputs))
        return SimpleNamespace(
            **{name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs, strict=True)}
        )

    def _feed(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
        feed = {}
        for name in self.input_names:
            tensor = inputs.get(name)
            if tensor is None and name == "token_type_ids":
                tensor = torch.zeros_like(inputs["input_ids"])  # what transformers models assume when absent
            if tensor is None:
                raise UnsupportedModel(f"{self.path} expects an input {name!r} that rerankd does not produce")
            feed[name] = tensor.detach().cpu().numpy().astype(np.int64, copy=False)
        return feed


def find_graph(folder: Path, quantize: Quantize) -> Path | None:
    """The folder's own fp32 (or int8) graph, if it ships one."""
    name = INT8_FILE if quantize == "int8" else ONNX_FILE
    for candidate in (folder / name, folder / "onnx" / name):
        if candidate.is_file():
            return candidate
    return None


def cache_root() -> Path:
    explicit = os.environ.get("RERANKD_ONNX_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "rerankd" / "onnx"


def cache_folder(folder: Path, input_names: Sequence[str], output: OutputName) -> Path:
    """Where graphs made from ``folder`` are kept; changes whenever its weights, config or graph change."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    shipped = sorted((folder / "onnx").iterdir()) if (folder / "onnx").is_dir() else []
    for file in sorted(folder.iterdir()) + shipped:
        if file.is_file() and file.suffix in _FINGERPRINT_SUFFIXES:
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    digest.update(
        f"{','.join(input_names)}->{output}|opset{OPSET}|graph{GRAPH_VERSION}|torch{torch.__version__}".encode()
    )
    return cache_root() / f"{folder.name}-{digest.hexdigest()[:16]}"


def _atomically(target: Path, write: Callable[[Path], object]) -> Path:
    """Build ``target`` under a temporary name and rename it, so concurrent loaders never see half a file."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}.onnx")
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def resolve_graph(
    folder: Path,
    build_torch: Callable[[], torch.nn.Module],
    quantize: Quantize,
    input_names: Sequence[str],
    output: OutputName,
) -> Path:
    """The graph to run: the folder's own, or one exported (and quantised) into the cache."""
    shipped = find_graph(folder, quantize)
    if shipped is not None:
        return shipped
    cache = cache_folder(folder, input_names, output)
    fp32 = find_graph(folder, None)
    if fp32 is None:
        logger.info("%s has no %s; exporting it to %s", folder, ONNX_FILE, cache)

        def export(path: Path) -> Path:
            return export_model(_built(folder, build_torch), path, input_names, output)

        fp32 = _atomically(cache / ONNX_FILE, export)
    if quantize is None:
        return fp32
    return _atomically(cache / INT8_FILE, lambda path: quantize_onnx(fp32, path))


def _built(folder: Path, build_torch: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    try:
        return build_torch()
    except OSError as exc:  # transformers' "no file named model.safetensors ..." family of errors
        raise ModelNotFound(
            f"{folder} has no ONNX graph ({ONNX_FILE}) and no torch weights to export one from: {exc}"
        ) from exc


def onnx_forward(
    folder: Path,
    build_torch: Callable[[], torch.nn.Module],
    device: torch.device,
    quantize: Quantize,
    input_names: Sequence[str],
    output: OutputName,
) -> OnnxForward:
    """An :class:`OnnxForward` over the folder's graph (exported / quantised on first use when needed)."""
    ort = require_onnxruntime()
    execution_providers(ort, device)  # fail on an unusable device before any export work
    graph = resolve_graph(folder, build_torch, quantize, input_names, output)
    forward = OnnxForward(create_session(graph, device), graph, output)
    logger.info("onnxruntime session on %s (%s)", graph, ", ".join(forward.providers))
    return forward
