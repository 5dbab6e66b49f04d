"""The accuracy guard for ``dtype="auto"``: a reduced-precision choice must keep a probe set's ranking.

At load, the model scores a fixed probe set in float32, is cast to the reduced dtype and scores it again.
The reduced dtype is kept only if the two agree: Spearman >= ``min_spearman`` and the largest score change
is at most ``max_relative_error`` of the float32 scores' spread; otherwise the model goes back to float32
and the fallback is logged. Random-weight or degenerate models whose probe scores have no spread fall back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

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
