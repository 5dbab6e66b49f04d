from __future__ import annotations

import importlib.util

import pytest
import torch

from rerankd.errors import DeviceUnavailable, InvalidInput
from rerankd.runtime.devices import resolve_device, resolve_dtype


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "npu", "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceUnavailable, match="no CUDA"):
        resolve_device("cuda:0")


@pytest.mark.skipif(importlib.util.find_spec("torch_npu") is not None, reason="torch_npu installed")
def test_npu_without_torch_npu_names_the_package() -> None:
    with pytest.raises(DeviceUnavailable, match="torch_npu is not installed"):
        resolve_device("npu:1")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "npu1", ""])
def test_malformed_device(bad: str) -> None:
    with pytest.raises(InvalidInput, match="unknown device"):
        resolve_device(bad)


def test_dtypes() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) is torch.float32
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    assert resolve_dtype("float16", cpu) is torch.float16
    assert resolve_dtype(torch.bfloat16, cpu) is torch.bfloat16
    with pytest.raises(InvalidInput, match="unknown dtype"):
        resolve_dtype("int3", cpu)
