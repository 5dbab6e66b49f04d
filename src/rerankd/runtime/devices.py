"""Device and dtype resolution: cpu, cuda[:N], npu[:N] (Ascend, via torch_npu), mps, and "auto"."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re

import torch

from rerankd import hardware
from rerankd.errors import DeviceUnavailable, InvalidInput

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_DEVICE_RE = re.compile(r"^(cpu|cuda|npu|mps)(?::(\d+))?$")


def configure_cpu_threads() -> int:
    """Cap torch's intra-op threads at the physical cores this process may use (more threads only contend
    for the same matmul units), unless the user chose a count (``OMP_NUM_THREADS``/``MKL_NUM_THREADS``)."""
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return torch.get_num_threads()
    cores = hardware.physical_cores()
    if torch.get_num_threads() > cores:
        logger.info("torch threads %d -> %d (physical cores)", torch.get_num_threads(), cores)
        torch.set_num_threads(cores)
    return torch.get_num_threads()


def _npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    importlib.import_module("torch_npu")  # registers the "npu" device type with torch
    npu = getattr(torch, "npu", None)
    return bool(npu is not None and npu.is_available())


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _check_index(kind: str, index: int, count: int) -> None:
    if index >= count:
        raise DeviceUnavailable(f"{kind}:{index} requested but only {count} {kind} device(s) are visible")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a device string into a usable ``torch.device`` or raise :class:`DeviceUnavailable`."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda:0")
        if _npu_available():
            return torch.device("npu:0")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    match = _DEVICE_RE.match(spec)
    if match is None:
        raise InvalidInput(f"unknown device {spec!r}; use auto, cpu, cuda[:N], npu[:N] or mps", param="device")
    kind, index_text = match.group(1), match.group(2)
    index = int(index_text or 0)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"{spec} requested but this torch build sees no CUDA device")
        _check_index("cuda", index, torch.cuda.device_count())
        return torch.device(f"cuda:{index}")
    if kind == "npu":
        if importlib.util.find_spec("torch_npu") is None:
            raise DeviceUnavailable(
                f"{spec} requested but torch_npu is not installed; install the torch_npu build matching "
                "torch and your CANN toolkit (see README, 'GPU and NPU installs')"
            )
        if not _npu_available():
            raise DeviceUnavailable(f"{spec} requested; torch_npu is installed but sees no Ascend NPU")
        _check_index("npu", index, torch.npu.device_count())  # type: ignore[attr-defined]
        return torch.device(f"npu:{index}")
    if not _mps_available():
        raise DeviceUnavailable("mps requested but the MPS backend is not available on this machine")
    return torch.device("mps")


def auto_dtype(device: torch.device) -> torch.dtype:
    """The fastest dtype that keeps rankings on ``device``: bfloat16 on CPUs with native bf16 (else float32),
    bfloat16 on CUDA devices that support it (else float16), bfloat16 on Ascend NPUs, float16 on MPS.
    ``Reranker.from_pretrained`` then checks a reduced choice on a probe set (``runtime.dtype_guard``)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "npu":
        return torch.bfloat16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if hardware.cpu_has_native_bf16() else torch.float32


def resolve_dtype(spec: str | torch.dtype, device: torch.device) -> torch.dtype:
    """An explicit dtype, or :func:`auto_dtype` for ``"auto"``."""
    if isinstance(spec, torch.dtype):
        return spec
    key = spec.strip().lower()
    if key == "auto":
        return auto_dtype(device)
    if key not in DTYPES:
        raise InvalidInput(f"unknown dtype {spec!r}; use auto, float32, float16 or bfloat16", param="dtype")
    dtype = DTYPES[key]
    if device.type == "cpu" and dtype is torch.float16:
        logger.warning("float16 on CPU is slow and less accurate than bfloat16; consider dtype=bfloat16")
    if device.type == "cpu" and dtype is torch.bfloat16 and not hardware.cpu_has_native_bf16():
        logger.warning("this CPU has no native bfloat16: torch emulates it, which is much slower than float32")
    return dtype
