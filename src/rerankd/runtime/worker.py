"""Run a family's forward passes over a batch plan and put the results back in input order."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rerankd.families.base import Encoded, FamilyLimits
from rerankd.runtime.planner import TokenBudget, plan_batches

Forward = Callable[[Sequence[Encoded]], torch.Tensor]
Progress = Callable[[int], None]


def run_planned(
    forward: Forward,
    items: Sequence[Encoded],
    limits: FamilyLimits,
    budget: TokenBudget,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Score or embed ``items`` in length-sorted, token-budgeted batches.

    ``forward`` is a family's ``score`` or ``embed``; the result's first dimension follows ``items``.
    Identical items are computed once (so they also get bit-identical results). ``progress`` is called
    with the number of input items finished after each batch.
    """
    if not items:
        return torch.empty(0)
    unique: dict[Encoded, int] = {}
    slots = [unique.setdefault(item, len(unique)) for item in items]
    distinct = list(unique)
    copies = torch.bincount(torch.tensor(slots), minlength=len(distinct)).tolist()
    computed = _run_distinct(forward, distinct, limits, budget, copies, progress)
    return computed[torch.tensor(slots, dtype=torch.long)]


def _run_distinct(
    forward: Forward,
    items: Sequence[Encoded],
    limits: FamilyLimits,
    budget: TokenBudget,
    copies: Sequence[int],
    progress: Progress | None,
) -> torch.Tensor:
    plan = plan_batches([len(item) for item in items], budget, limits.pad_to_multiple_of)
    results: list[torch.Tensor] = []
    positions: list[int] = []
    with torch.inference_mode():
        for batch in plan:
            results.append(forward([items[i] for i in batch]))
            positions.extend(batch)
            if progress is not None:
                progress(sum(copies[i] for i in batch))
    stacked = torch.cat(results, dim=0)
    out = torch.empty_like(stacked)
    out[torch.tensor(positions, dtype=torch.long)] = stacked
    return out
