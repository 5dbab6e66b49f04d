from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import pytest
import torch

from rerankd.errors import InvalidInput
from rerankd.families.base import BatchKey, CallOptions, Encoded, FamilyLimits
from rerankd.runtime.planner import TokenBudget, padded_length, padding_waste, plan_batches
from rerankd.runtime.worker import run_planned


def test_every_position_once_and_batches_respect_the_budget() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(5, 300) for _ in range(500)]
    budget = TokenBudget(max_tokens=2048, max_batch_size=64)
    plan = plan_batches(lengths, budget)
    assert sorted(p for batch in plan for p in batch) == list(range(500))
    for batch in plan:
        assert len(batch) <= 64
        assert len(batch) * max(lengths[i] for i in batch) <= 2048


def test_longest_first_and_sorted_within_batches() -> None:
    lengths = [10, 50, 30, 50, 20]
    plan = plan_batches(lengths, TokenBudget(max_tokens=100, max_batch_size=8, batch_overhead_tokens=0))
    assert plan == [[1], [3], [2], [4], [0]]  # free batches: no padding at all is cheapest
    costly = plan_batches(lengths, TokenBudget(max_tokens=100, max_batch_size=8, batch_overhead_tokens=100))
    assert costly == [[1, 3], [2, 4, 0]]  # a batch costs more than the padding it saves


def test_input_longer_than_budget_runs_alone() -> None:
    assert plan_batches([5000, 10], TokenBudget(max_tokens=100)) == [[0], [1]]


def test_pad_to_multiple_counts_padded_width() -> None:
    assert padded_length(9, 8) == 16
    assert padded_length(9, None) == 9
    # 3 rows of 9 tokens padded to 16 = 48 > 40, so only 2 fit per batch
    plan = plan_batches([9, 9, 9], TokenBudget(max_tokens=40), pad_to_multiple_of=8)
    assert sorted(len(b) for b in plan) == [1, 2]


def test_sorted_plans_waste_little_padding() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(150, 260) for _ in range(100)]
    plan = plan_batches(lengths, TokenBudget(max_tokens=8192))
    assert padding_waste(lengths, plan) < 0.05
    unsorted = [list(range(i, min(i + 32, 100))) for i in range(0, 100, 32)]
    assert padding_waste(lengths, unsorted) > padding_waste(lengths, plan)


def test_plan_is_optimal_against_brute_force() -> None:
    import itertools

    rng = random.Random(2)
    for _ in range(30):
        lengths = [rng.randint(1, 40) for _ in range(rng.randint(1, 8))]
        budget = TokenBudget(max_tokens=rng.randint(40, 120), max_batch_size=rng.randint(1, 5), batch_overhead_tokens=7)
        widths = sorted(lengths, reverse=True)

        def cost(batches: list[list[int]]) -> int:
            return sum(len(b) * max(b) + 7 for b in batches)

        best = None
        for mask in itertools.product([0, 1], repeat=len(widths) - 1):
            batches, current = [], [widths[0]]
            for w, cut in zip(widths[1:], mask, strict=True):
                if cut:
                    batches.append(current)
                    current = []
                current.append(w)
            batches.append(current)
            ok = all(
                len(b) <= budget.max_batch_size and (len(b) == 1 or len(b) * max(b) <= budget.max_tokens)
                for b in batches
            )
            if ok and (best is None or cost(batches) < best):
                best = cost(batches)
        plan = plan_batches(lengths, budget)
        assert cost([[lengths[i] for i in b] for b in plan]) == best


def test_budget_must_be_positive() -> None:
    with pytest.raises(InvalidInput, match="must be positive"):
        TokenBudget(max_tokens=0)


KEY = ("score", CallOptions())


class FakeWorker:
    """A runtime worker around a plain function of the batch."""

    def __init__(self, forward: Callable[[list[Encoded]], torch.Tensor], limits: FamilyLimits) -> None:
        self.limits = limits
        self._forward = forward

    def forward(self, batch: Sequence[Encoded], key: BatchKey) -> torch.Tensor:
        assert key == KEY
        return self._forward(list(batch))


def test_run_planned_maps_results_back_to_input_order() -> None:
    items = [Encoded(input_ids=tuple(range(n)), full_length=n) for n in (3, 9, 1, 7, 8, 2)]
    seen_batches: list[int] = []

    def forward(batch: list[Encoded]) -> torch.Tensor:
        seen_batches.append(len(batch))
        return torch.tensor([[float(len(e))] for e in batch])

    out = run_planned(FakeWorker(forward, FamilyLimits(max_length=16)), items, KEY, TokenBudget(max_tokens=18))
    assert out[:, 0].tolist() == [3.0, 9.0, 1.0, 7.0, 8.0, 2.0]
    assert len(seen_batches) > 1 and sum(seen_batches) == len(items)


def test_identical_items_are_computed_once() -> None:
    a = Encoded(input_ids=(1, 2, 3), full_length=3)
    b = Encoded(input_ids=(4, 5), full_length=2)
    rows: list[int] = []
    done: list[int] = []

    def forward(batch: list[Encoded]) -> torch.Tensor:
        rows.extend(len(e) for e in batch)
        return torch.tensor([[float(sum(e.input_ids))] for e in batch])

    worker = FakeWorker(forward, FamilyLimits(max_length=8))
    out = run_planned(worker, [a, b, a, a, b], KEY, TokenBudget(), progress=done.append)
    assert out[:, 0].tolist() == [6.0, 9.0, 6.0, 6.0, 9.0]
    assert sorted(rows) == [2, 3] and sum(done) == 5
