"""Pure batch planning: sort by length, cut batches by a token budget, map back to input order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenBudget:
    """How much one forward pass may hold.

    ``max_tokens`` bounds the padded size of a batch (rows x longest row), which is what memory and time
    scale with; ``max_batch_size`` bounds the row count for very short inputs.
    """

    max_tokens: int = 8192
    max_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_batch_size < 1:
            raise ValueError("max_tokens and max_batch_size must be positive")


def padded_length(length: int, multiple: int | None) -> int:
    if not multiple:
        return length
    return -(-length // multiple) * multiple


def plan_batches(lengths: Sequence[int], budget: TokenBudget, pad_to_multiple_of: int | None = None) -> list[list[int]]:
    """Group input positions into batches, longest first.

    Sorting by length before cutting keeps padding small; each batch holds as many rows as fit in
    ``budget.max_tokens`` padded tokens (at least one row, so an input longer than the budget still runs).
    Returns lists of positions into ``lengths``; every position appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for position in order:
        row = padded_length(lengths[position], pad_to_multiple_of)
        new_width = max(width, row)
        fits = (len(current) + 1) * new_width <= budget.max_tokens and len(current) < budget.max_batch_size
        if current and not fits:
            batches.append(current)
            current, new_width = [], row
        current.append(position)
        width = new_width
    if current:
        batches.append(current)
    return batches


def padding_waste(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Computed tokens / real tokens - 1 for a plan (0.0 means no padding at all)."""
    real = sum(lengths)
    if real == 0:
        return 0.0
    computed = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return computed / real - 1.0
