"""Pure batch planning: sort by length, cut batches by a token budget, map back to input order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from rerankd.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class TokenBudget:
    """How much one forward pass may hold.

    ``max_tokens`` bounds the padded size of a batch (rows x longest row), which is what memory and time
    scale with; ``max_batch_size`` bounds the row count for very short inputs. ``batch_overhead_tokens`` is
    the fixed cost of one forward pass expressed in tokens: the planner trades it against padding.
    """

    max_tokens: int = 8192
    max_batch_size: int = 256
    batch_overhead_tokens: int = 128

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.max_batch_size < 1 or self.batch_overhead_tokens < 0:
            raise InvalidInput(
                f"batch_tokens ({self.max_tokens}) and max_batch_size ({self.max_batch_size}) must be positive",
                param="batch_tokens",
            )


def padded_length(length: int, multiple: int | None) -> int:
    if not multiple:
        return length
    return -(-length // multiple) * multiple


def plan_batches(lengths: Sequence[int], budget: TokenBudget, pad_to_multiple_of: int | None = None) -> list[list[int]]:
    """Group input positions into batches, longest first, with the least padded work.

    Inputs are sorted by length (longest first) and the sorted run is cut into contiguous batches that
    minimise ``sum(rows x widest row) + batches x batch_overhead_tokens`` subject to the token budget (an
    exact dynamic programme over cut points; every batch holds at least one row, so an input longer than
    the budget still runs). Returns lists of positions into ``lengths``; each appears exactly once.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    widths = [padded_length(lengths[i], pad_to_multiple_of) for i in order]
    cuts = _best_cuts(widths, budget)
    return [order[start:stop] for start, stop in pairwise(cuts)]


def _best_cuts(widths: Sequence[int], budget: TokenBudget) -> list[int]:
    """Cut points 0 = c0 < c1 < ... = n over descending ``widths`` (batch k is widths[c_k:c_k+1])."""
    n = len(widths)
    cost = [0] + [0] * n  # cost[j]: cheapest plan for the first j rows
    back = [0] * (n + 1)
    for stop in range(1, n + 1):
        best, best_start = -1, stop - 1
        lowest = max(0, stop - budget.max_batch_size)
        for start in range(stop - 1, lowest - 1, -1):
            rows, width = stop - start, widths[start]  # sorted descending: the first row is the widest
            if rows > 1 and rows * width > budget.max_tokens:
                break
            total = cost[start] + rows * width + budget.batch_overhead_tokens
            if best < 0 or total < best:
                best, best_start = total, start
        cost[stop], back[stop] = best, best_start
    cuts = [n]
    while cuts[-1] > 0:
        cuts.append(back[cuts[-1]])
    return cuts[::-1]


def padding_waste(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Computed tokens / real tokens - 1 for a plan (0.0 means no padding at all)."""
    real = sum(lengths)
    if real == 0:
        return 0.0
    computed = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    return computed / real - 1.0
