"""The runtime's one seam to the model: a :class:`Worker` runs a forward pass over a batch someone else cut.

Both execution paths call a worker and nothing else: :func:`run_planned` (the synchronous library path, which
plans its own batches) and the :class:`~rerankd.runtime.scheduler.Scheduler` (the server, which batches items of
many requests together). Neither knows what a score means or who asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol, cast

import torch

from rerankd.errors import OutOfMemory
from rerankd.families.base import BatchKey, Embedder, Encoded, Family, FamilyLimits, PairScorer
from rerankd.runtime.planner import TokenBudget, plan_batches

Progress = Callable[[int], None]


class Worker(Protocol):
    """Prepared model inputs in, raw output rows out (one row per input, in batch order)."""

    limits: FamilyLimits

    def forward(self, batch: Sequence[Encoded], key: BatchKey) -> torch.Tensor: ...


class FamilyWorker:
    """Runs one loaded family's forward passes: one at a time (a lock per model, so any thread may call it), in
    inference mode. ``key`` says which operation the batch needs: ``("score", call)`` or ``("embed", call)``."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.limits = family.limits
        self._lock = threading.Lock()

    def forward(self, batch: Sequence[Encoded], key: BatchKey) -> torch.Tensor:
        kind, call = key
        with self._lock, torch.inference_mode():
            if kind == "embed":  # jobs of kind "embed" are only prepared for embedders, "score" for pair scorers
                return cast(Embedder, self.family).embed(batch)
            return cast(PairScorer, self.family).score(batch, call)


def forward_splitting_on_oom(worker: Worker, batch: Sequence[Encoded], key: BatchKey) -> torch.Tensor:
    """``worker.forward``; when the device runs out of memory, the batch is split in two and each half tried once.
    Still out of memory: :class:`~rerankd.errors.OutOfMemory` (503), for this batch's requests only."""
    try:
        return worker.forward(batch, key)
    except torch.OutOfMemoryError:
        _release_cached_memory()
        if len(batch) == 1:
            raise OutOfMemory(_OOM_MESSAGE.format(n=1)) from None
    middle = len(batch) // 2
    try:
        return torch.cat([worker.forward(batch[:middle], key), worker.forward(batch[middle:], key)], dim=0)
    except torch.OutOfMemoryError:
        _release_cached_memory()
        raise OutOfMemory(_OOM_MESSAGE.format(n=len(batch))) from None


_OOM_MESSAGE = (
    "the device ran out of memory on a batch of {n} inputs, also after splitting it; retry with fewer or shorter "
    "documents, or give the server a smaller --batch-tokens"
)


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_planned(
    worker: Worker,
    items: Sequence[Encoded],
    key: BatchKey,
    budget: TokenBudget,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Run ``items`` through ``worker`` in length-sorted, token-budgeted batches; rows follow ``items``.

    Identical items are computed once (so they also get bit-identical results). ``progress`` is called with the
    number of input items finished after each batch.
    """
    if not items:
        return torch.empty(0)
    unique: dict[Encoded, int] = {}
    slots = [unique.setdefault(item, len(unique)) for item in items]
    distinct = list(unique)
    copies = torch.bincount(torch.tensor(slots), minlength=len(distinct)).tolist()
    plan = plan_batches([len(item) for item in distinct], budget, worker.limits.pad_to_multiple_of)
    results: list[torch.Tensor] = []
    positions: list[int] = []
    for batch in plan:
        results.append(worker.forward([distinct[i] for i in batch], key))
        positions.extend(batch)
        if progress is not None:
            progress(sum(copies[i] for i in batch))
    stacked = torch.cat(results, dim=0)
    computed = torch.empty_like(stacked)
    computed[torch.tensor(positions, dtype=torch.long)] = stacked
    return computed[torch.tensor(slots, dtype=torch.long)]
