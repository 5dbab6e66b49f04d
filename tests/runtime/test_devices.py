from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from rerankd import hardware
from rerankd.errors import DeviceUnavailable, InvalidInput
from rerankd.runtime import devices
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


def test_auto_dtype_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.delenv("RERANKD_CPU_BF16")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert resolve_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx", "avx2"})
    assert resolve_dtype("auto", cpu) is torch.float32


def test_cpu_bf16_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setenv("RERANKD_CPU_BF16", "1")
    assert resolve_dtype("auto", torch.device("cpu")) is torch.bfloat16
    monkeypatch.setenv("RERANKD_CPU_BF16", "0")
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx512_bf16"})
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32


X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""
AVX2_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\nCPU implementer\t: 0x41\n"


@pytest.mark.parametrize(
    ("text", "flags", "native"),
    [
        (X86_CPUINFO, {"fpu", "vme", "sse2", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, True),
        (AVX2_CPUINFO, {"fpu", "sse2", "avx", "avx2", "fma"}, False),
        (ARM_CPUINFO, {"fp", "asimd", "evtstrm", "aes", "sve", "bf16", "i8mm"}, True),
        ("processor\t: 0\n", set(), False),
    ],
    ids=["x86-amx", "x86-avx2", "aarch64-bf16", "no-flags"],
)
def test_cpu_flags_are_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, flags: set[str], native: bool
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert hardware.cpu_flags(str(cpuinfo)) == flags
    monkeypatch.delenv("RERANKD_CPU_BF16", raising=False)
    monkeypatch.setattr(hardware, "CPUINFO", str(cpuinfo))
    assert hardware.cpu_has_native_bf16() is native


def test_cpu_description_names_model_and_speed_flags(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: AMD EPYC 9R14\n" + X86_CPUINFO)
    described = hardware.cpu_description(str(cpuinfo))
    assert described.startswith("AMD EPYC 9R14 (amx_bf16, avx512_bf16, avx512f, avx2), ")
    assert described.endswith(" CPUs")
    cpuinfo.write_text(AVX2_CPUINFO)
    assert hardware.cpu_description(str(cpuinfo)).startswith("AMD EPYC (avx2), ")
    cpuinfo.write_text(ARM_CPUINFO)  # no model name: the platform's name stands in, the flags still tell
    assert "(bf16, asimd), " in hardware.cpu_description(str(cpuinfo))


def test_missing_cpuinfo_means_no_flags(tmp_path: Path) -> None:
    assert hardware.cpu_flags(str(tmp_path / "absent")) == set()


def test_dtypes() -> None:
    cpu = torch.device("cpu")
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    assert resolve_dtype("float16", cpu) is torch.float16
    assert resolve_dtype(torch.bfloat16, cpu) is torch.bfloat16
    with pytest.raises(InvalidInput, match="unknown dtype"):
        resolve_dtype("int3", cpu)


def test_cpu_threads_capped_at_physical_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware, "physical_cores", lambda: 1)
    try:
        torch.set_num_threads(2)
        assert devices.configure_cpu_threads() == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a user's explicit choice is kept
        assert devices.configure_cpu_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_physical_cores_is_positive() -> None:
    assert 1 <= hardware.physical_cores() <= (os.cpu_count() or 1)
