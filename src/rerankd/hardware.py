"""What this machine's CPU offers: feature flags (native bf16?) and physical cores. A leaf module: it imports
nothing from rerankd, so every layer (families' ONNX sessions, the runtime's device choice) can use it."""

from __future__ import annotations

import os
import platform

BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX) and aarch64 ("bf16" feature)


CPUINFO = "/proc/cpuinfo"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags the kernel reports in ``cpuinfo`` (x86 ``flags``, aarch64 ``Features``; empty
    where the file does not exist). ``cpuinfo`` defaults to :data:`CPUINFO`."""
    try:
        with open(cpuinfo or CPUINFO, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


SPEED_FLAGS = ("amx_bf16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2", "bf16", "asimd")  # what moves matmul speed


def cpu_description(cpuinfo: str | None = None) -> str:
    """The CPU as a speed figure should name it: model name, the flags that set matmul speed, usable CPUs —
    e.g. ``"AMD EPYC (avx512_bf16, avx512_vnni, avx512f, avx2), 2 CPUs"``."""
    name = ""
    try:
        with open(cpuinfo or CPUINFO, encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    name = value.strip()
                    break
    except OSError:
        pass
    flags = cpu_flags(cpuinfo)
    shown = [f for f in SPEED_FLAGS if f in flags]
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    label = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{label} ({', '.join(shown) or 'no SIMD flags reported'}), {usable} CPUs"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 matmuls natively; without it torch emulates bf16, which is
    many times slower than fp32 (measured here: ~40x on an AVX2-only CPU).

    ``RERANKD_CPU_BF16=1`` or ``=0`` overrides the detection (for VMs that hide CPU flags, or to pin
    ``dtype="auto"`` to float32 on CPUs, as the test suite does so that its golden scores hold on any CPU)."""
    forced = os.environ.get("RERANKD_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return bool(cpu_flags() & BF16_CPU_FLAGS)


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads share one core's matmul units)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil
    except ImportError:
        return max(1, usable)
    physical = psutil.cpu_count(logical=False) or usable
    return max(1, min(physical, usable))
