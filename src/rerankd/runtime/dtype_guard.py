"""The accuracy guard for ``dtype="auto"``: a reduced-precision choice must keep a probe set's ranking.

At load, the model scores a fixed probe set in float32, is cast to the reduced dtype and scores it again.
The reduced dtype is kept only if the two agree by :mod:`rerankd.runtime.acceptance`'s rule, the same one
``rerankd compare`` applies (rank agreement, error relative to the score spread, relative error on meaningful
scores); otherwise the model goes back to its exact float32 weights and the fallback is logged. Degenerate
models whose probe scores have no spread fall back.

The verdict is deterministic: the probe set, its batch plan and the thread count are fixed, and whether the
check runs depends on the memory the kernel says is *available* (MemAvailable, page cache included), not on
MemFree, which a full page cache drives to near zero between two loads of the same weights. A model whose
float32 copy does not fit is loaded in the reduced dtype with a warning saying it was not checked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rerankd.families.base import cast_parameters
from rerankd.runtime.acceptance import PrecisionRule, judge

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OTHER_DEVICE_MEMORY = 4 << 30  # where free memory cannot be queried (npu, mps): guard models up to ~1B params
MEMINFO = Path("/proc/meminfo")

PROBE_PAIRS: tuple[tuple[str, str], ...] = (
    ("what is panda?", "The giant panda is a bear species endemic to China, living in bamboo forests."),
    ("what is panda?", "hi"),
    ("what is panda?", "Pandas is a Python library for data analysis built on NumPy arrays."),
    ("what is the capital of France?", "Paris is the capital and most populous city of France."),
    ("what is the capital of France?", "Berlin is the capital of Germany and its largest city."),
    ("what is the capital of France?", "The Eiffel Tower was completed in 1889 for the World's Fair."),
    ("Tell me about machine learning", "Machine learning builds systems that learn patterns from data."),
    ("Tell me about machine learning", "The recipe needs two cups of flour and a pinch of salt."),
    ("how do vaccines work?", "Vaccines train the immune system to recognise a pathogen without causing disease."),
    ("how do vaccines work?", "The stock market closed higher on Friday after strong earnings reports."),
    ("best way to learn guitar", "Practice chords daily, start slowly and learn songs you enjoy playing."),
    ("best way to learn guitar", "Guitars are usually made of wood such as spruce, mahogany and rosewood."),
)


@dataclass(frozen=True)
class Agreement:
    """The probe's verdict (:func:`rerankd.runtime.acceptance.judge` on the probe scores as one list)."""

    spearman: float
    relative_error: float  # max |delta| / (max - min) of the reference scores ("error relative to the spread")
    passed: bool
    meaningful_relative_error: float = 0.0  # mean |delta| / |a| over scores with |a| >= 10% of the spread
    failures: tuple[str, ...] = ()


MIN_PROBE_SPREAD = 1e-6  # probe scores closer than this cannot be ordered: no verdict, keep float32


def compare_scores(
    reference: Sequence[float], candidate: Sequence[float], rule: PrecisionRule | None = None
) -> Agreement:
    """The shared rule applied to the probe scores, taken as one ranked list."""
    ref = np.asarray(reference, dtype=np.float64)
    if ref.size < 2 or float(np.ptp(ref)) <= MIN_PROBE_SPREAD:
        return Agreement(0.0, float("inf"), False, float("inf"), ("no spread in the float32 probe scores",))
    verdict = judge([ref], [np.asarray(candidate, dtype=np.float64)], rule)
    rho = verdict.spearman if verdict.spearman is not None else 0.0
    failures = tuple(verdict.failures())
    return Agreement(rho, verdict.spread_error, verdict.passed, verdict.relative_error, failures)


def guard_reduced_precision(
    probe: Callable[[], Sequence[float]], cast: Callable[[torch.dtype], None], dtype: torch.dtype
) -> tuple[torch.dtype, Agreement]:
    """Cast a float32 model to ``dtype`` if the probe set agrees; returns the dtype in use."""
    reference = list(probe())
    cast(dtype)
    agreement = compare_scores(reference, list(probe()))
    if agreement.passed:
        logger.info(
            "dtype auto: %s keeps the probe ranking (spearman %.4f, rel. error %.4f)",
            dtype,
            agreement.spearman,
            agreement.relative_error,
        )
        return dtype, agreement
    cast(torch.float32)
    logger.warning(
        "dtype auto: %s is not acceptable on the probe set (%s); using float32",
        dtype,
        "; ".join(agreement.failures) or "failed",
    )
    return torch.float32, agreement


def weights_bytes(folder: Path) -> int:
    """Bytes of the weight files in a model folder (sub-folders included, e.g. sentence-transformers')."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def available_ram() -> int:
    """RAM a new allocation can get: MemAvailable (free pages plus reclaimable page cache), not MemFree."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc/meminfo (macOS, ...): free pages, an under-estimate
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return OTHER_DEVICE_MEMORY


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (available RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        return available_ram()
    return OTHER_DEVICE_MEMORY


def float32_fits(folder: Path, device: torch.device, share: float = 0.5) -> bool:
    """Whether a float32 copy of the model (at most twice its 16-bit files) takes under ``share`` of the free
    memory. A larger model loads straight in the reduced dtype, and says so: it was not checked."""
    needed, free = 2 * weights_bytes(folder), free_memory(device)
    if needed <= share * free:
        return True
    logger.warning(
        "dtype auto: no room to check the reduced dtype of %s (a float32 copy needs %.1f GiB, %.1f GiB free): "
        "loading it unchecked; pass dtype='float32' (or the reduced dtype) to choose, or check it with "
        "`rerankd compare`",
        folder, needed / 2**30, free / 2**30,
    )  # fmt: skip
    return False


def check_loaded(
    module: torch.nn.Module, keep_fp32: Sequence[str], probe: Callable[[], Sequence[float]], dtype: torch.dtype
) -> tuple[torch.dtype, Agreement]:
    """Run the guard on a family's weights loaded in float32: the dtype it ends in, and the probe agreement.
    ``keep_fp32`` are the parameter-name prefixes that stay float32 (the family's declared scoring heads).

    The float32 tensors are kept until the verdict, so a fallback restores them exactly (no bf16 rounding
    left behind); memory peaks at 1.5x the float32 model during the check."""
    originals = {name: param.data for name, param in module.named_parameters()}

    def cast(target: torch.dtype) -> None:
        if target is torch.float32:
            for name, param in module.named_parameters():
                param.data = originals[name]
        else:
            cast_parameters(module, target, keep_fp32)

    chosen, agreement = guard_reduced_precision(probe, cast, dtype)
    originals.clear()
    return chosen, agreement
