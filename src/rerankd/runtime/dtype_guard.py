"""The accuracy guard for ``dtype="auto"``: a reduced-precision choice must keep a probe set's ranking.

At load, the model scores a fixed probe set in float32, is cast to the reduced dtype and scores it again.
The reduced dtype is kept only if the two agree: Spearman >= ``min_spearman`` and the largest score change
is at most ``max_relative_error`` of the float32 scores' spread; otherwise the model goes back to float32
and the fallback is logged. Random-weight or degenerate models whose probe scores have no spread fall back.
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

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
OTHER_DEVICE_MEMORY = 4 << 30  # where free memory cannot be queried (npu, mps): guard models up to ~1B params

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
    spearman: float
    relative_error: float  # max |delta| / (max - min) of the reference scores
    passed: bool


def compare_scores(
    reference: Sequence[float], candidate: Sequence[float], min_spearman: float = 0.98, max_relative_error: float = 0.02
) -> Agreement:
    ref, cand = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    spread = float(ref.max() - ref.min())
    if spread <= 1e-6 or not np.isfinite(cand).all():
        return Agreement(spearman=0.0, relative_error=float("inf"), passed=False)
    ranks_ref = np.argsort(np.argsort(ref))
    ranks_cand = np.argsort(np.argsort(cand))
    spearman = float(np.corrcoef(ranks_ref, ranks_cand)[0, 1])
    relative = float(np.abs(cand - ref).max() / spread)
    return Agreement(spearman, relative, spearman >= min_spearman and relative <= max_relative_error)


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
        "dtype auto: %s changed the probe ranking (spearman %.4f, rel. error %.4f); using float32",
        dtype,
        agreement.spearman,
        agreement.relative_error,
    )
    return torch.float32, agreement


def weights_bytes(folder: Path) -> int:
    """Bytes of the weight files in a model folder (sub-folders included, e.g. sentence-transformers')."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` (available RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return OTHER_DEVICE_MEMORY
    return OTHER_DEVICE_MEMORY


def float32_fits(folder: Path, device: torch.device, share: float = 0.5) -> bool:
    """Whether a float32 copy of the model (at most twice its 16-bit files) takes under ``share`` of the free
    memory; larger models skip the guard and load straight in the reduced dtype."""
    return 2 * weights_bytes(folder) <= share * free_memory(device)


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
