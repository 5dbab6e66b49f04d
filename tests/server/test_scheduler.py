"""The scheduler on its own (no HTTP): cross-request batching, fairness, cancellation, backpressure,
timeouts, failure isolation and key separation. The forward pass is a deterministic function of the
token ids that records every batch it sees."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Hashable, Sequence
from typing import Any

import pytest
import torch

from rerankd.errors import DeadlineExceeded, NotReady, OutOfMemory, Overloaded, PayloadTooLarge
from rerankd.families.base import Encoded, FamilyLimits
from rerankd.runtime.activity import DeviceActivity
from rerankd.runtime.planner import TokenBudget
from rerankd.runtime.scheduler import Scheduler, SchedulerConfig

pytestmark = pytest.mark.timeout(60)


class RecordingForward:
    """A worker: score(item) = sum of its ids; sleeps ``delay`` per batch; raises on the id ``poison``."""

    limits = FamilyLimits(max_length=512)

    def __init__(self, delay: float = 0.0, poison: int | None = None) -> None:
        self.delay = delay
        self.poison = poison
        self.batches: list[tuple[list[int], Hashable]] = []
        self.threads: set[int] = set()

    def forward(self, batch: Sequence[Encoded], key: Hashable) -> torch.Tensor:
        self.threads.add(threading.get_ident())
        self.batches.append(([item.input_ids[0] for item in batch], key))
        if self.delay:
            time.sleep(self.delay)
        if self.poison is not None and any(self.poison in item.input_ids for item in batch):
            raise RuntimeError("boom")
        return torch.tensor([[float(sum(item.input_ids))] for item in batch])

    @property
    def rows(self) -> int:
        return sum(len(ids) for ids, _ in self.batches)


def items(first_id: int, n: int, length: int = 8) -> list[Encoded]:
    return [Encoded(input_ids=(first_id + i,) + (1,) * (length - 1)) for i in range(n)]


def expected(batch: list[Encoded]) -> list[float]:
    return [float(sum(item.input_ids)) for item in batch]


def config(max_tokens: int = 64, max_batch: int = 8, **kwargs: Any) -> SchedulerConfig:
    budget = TokenBudget(max_tokens=max_tokens, max_batch_size=max_batch)
    return SchedulerConfig(budget=budget, **kwargs)


async def started(forward: RecordingForward, cfg: SchedulerConfig) -> Scheduler:
    scheduler = Scheduler(forward, cfg, name="test")
    scheduler.start()
    return scheduler


def test_results_follow_item_order_and_requests_share_batches() -> None:
    async def main() -> None:
        forward = RecordingForward(delay=0.01)
        scheduler = await started(forward, config(max_tokens=8 * 8, max_batch=8))
        a = [Encoded(input_ids=(100 + i,) + (1,) * (i % 5)) for i in range(6)]  # mixed lengths
        b = items(200, 3)
        got_a, got_b = await asyncio.gather(scheduler.submit(a, "k"), scheduler.submit(b, "k"))
        assert got_a[:, 0].tolist() == expected(a)
        assert got_b[:, 0].tolist() == expected(b)
        shared = [ids for ids, _ in forward.batches if any(i >= 200 for i in ids) and any(i < 200 for i in ids)]
        assert shared, f"no batch mixed both requests: {forward.batches}"
        assert threading.get_ident() not in forward.threads  # forward passes run off the event loop
        await scheduler.close()

    asyncio.run(main())


def test_small_request_is_not_starved_by_a_big_one() -> None:
    """A 5-item request arriving behind a 1,000-item one finishes within a few batches."""

    async def main() -> int:
        forward = RecordingForward(delay=0.002)
        scheduler = await started(forward, config(max_tokens=8 * 8, max_batch=8, max_queued_items=5000))
        big = asyncio.create_task(scheduler.submit(items(10_000, 1000), "k"))
        while forward.rows < 40:  # the big request is being served
            await asyncio.sleep(0.001)
        rows_before = forward.rows
        small = await scheduler.submit(items(1, 5), "k")
        rows_for_small = forward.rows - rows_before
        assert not big.done()
        assert small[:, 0].tolist() == expected(items(1, 5))
        await big
        await scheduler.close()
        return rows_for_small

    rows = asyncio.run(main())
    assert rows <= 3 * 8, f"the small request waited for {rows} rows of the big one"


def test_the_oldest_request_keeps_moving_under_a_stream_of_small_ones() -> None:
    async def main() -> None:
        forward = RecordingForward(delay=0.001)
        scheduler = await started(forward, config(max_tokens=8 * 8, max_batch=8, max_queued_items=10_000))
        big = asyncio.create_task(scheduler.submit(items(50_000, 200), "k"))
        small = [asyncio.create_task(scheduler.submit(items(1000 * (i + 1), 4), "k")) for i in range(300)]
        await asyncio.wait_for(big, timeout=20)  # smallest-first alone would serve all 1,200 small items first
        served_before_big = sum(1 for task in small if task.done())
        assert served_before_big < 250
        await asyncio.gather(*small)
        await scheduler.close()

    asyncio.run(main())


def test_cancelled_request_has_its_queued_items_dropped() -> None:
    async def main() -> None:
        forward = RecordingForward(delay=0.005)
        scheduler = await started(forward, config(max_tokens=8 * 8, max_batch=8, max_queued_items=5000))
        big = asyncio.create_task(scheduler.submit(items(10_000, 1000), "k"))
        while forward.rows < 16:
            await asyncio.sleep(0.001)
        big.cancel()
        with pytest.raises(asyncio.CancelledError):
            await big
        assert scheduler.queued_items == 0
        rows_at_cancel = forward.rows
        after = await scheduler.submit(items(1, 3), "k")  # the scheduler goes on
        assert after[:, 0].tolist() == expected(items(1, 3))
        assert forward.rows <= rows_at_cancel + 8 + 3  # at most the batch in flight, then the new request
        await scheduler.close()

    asyncio.run(main())


def test_full_queue_is_overloaded_with_retry_after() -> None:
    async def main() -> None:
        forward = RecordingForward(delay=0.01)
        scheduler = await started(forward, config(max_queued_items=10, retry_after_s=3.0))
        first = asyncio.create_task(scheduler.submit(items(1, 10), "k"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await scheduler.submit(items(100, 2), "k")
        assert info.value.retry_after_s == 3.0
        assert "queue" in info.value.message
        assert (await first).shape == (10, 1)
        await scheduler.close()

    asyncio.run(main())


def test_a_request_larger_than_the_whole_queue_is_refused_even_when_the_queue_is_empty() -> None:
    """Admission counts what will be computed, items and tokens, also on an empty queue; retrying cannot help,
    so it is PayloadTooLarge (413), not Overloaded (429)."""

    async def main() -> None:
        forward = RecordingForward()
        scheduler = await started(forward, config(max_queued_items=10, max_queued_tokens=2048))
        with pytest.raises(PayloadTooLarge, match="11 model inputs"):
            await scheduler.submit(items(1, 11), "k")
        with pytest.raises(PayloadTooLarge, match="2056 tokens"):
            await scheduler.submit(items(1, 1, length=2056), "k")
        assert forward.rows == 0 and scheduler.queued_items == 0
        assert (await scheduler.submit(items(1, 10), "k")).shape == (10, 1)
        await scheduler.close()

    asyncio.run(main())


def test_timeout_drops_the_request() -> None:
    async def main() -> None:
        forward = RecordingForward(delay=0.01)
        scheduler = await started(forward, config(max_queued_items=5000, timeout_s=0.05))
        with pytest.raises(DeadlineExceeded):
            await scheduler.submit(items(1, 500), "k")
        assert scheduler.queued_items == 0
        assert forward.rows < 500
        await scheduler.close()

    asyncio.run(main())


def test_a_failing_batch_fails_exactly_its_requests() -> None:
    async def main() -> None:
        forward = RecordingForward(poison=666)
        scheduler = await started(forward, config(max_tokens=4 * 8, max_batch=4))
        good = items(1, 4)
        bad = items(664, 4)  # ids 664..667: one poisoned item
        results = await asyncio.gather(scheduler.submit(good, "a"), scheduler.submit(bad, "b"), return_exceptions=True)
        assert isinstance(results[1], RuntimeError)
        assert isinstance(results[0], torch.Tensor) and results[0][:, 0].tolist() == expected(good)
        again = await scheduler.submit(items(1, 2), "b")  # still healthy
        assert again[:, 0].tolist() == expected(items(1, 2))
        await scheduler.close()

    asyncio.run(main())


def test_different_keys_never_share_a_batch() -> None:
    async def main() -> None:
        forward = RecordingForward(delay=0.002)
        scheduler = await started(forward, config(max_tokens=16 * 8, max_batch=16))
        tasks = [scheduler.submit(items(1000 * k, 5), key) for k, key in enumerate(["x", "y", "x", "z", "y"], 1)]
        await asyncio.gather(*tasks)
        owner = {1000 * k + i: key for k, key in enumerate(["x", "y", "x", "z", "y"], 1) for i in range(5)}
        for ids, key in forward.batches:
            assert {owner[i] for i in ids} == {key}
        await scheduler.close()

    asyncio.run(main())


def test_close_drains_then_refuses() -> None:
    async def main() -> None:
        forward = RecordingForward(delay=0.002)
        scheduler = await started(forward, config())
        pending = asyncio.create_task(scheduler.submit(items(1, 40), "k"))
        await asyncio.sleep(0)
        await scheduler.close(drain_timeout_s=10)
        assert (await pending).shape == (40, 1)
        with pytest.raises(NotReady):
            await scheduler.submit(items(1, 1), "k")

    asyncio.run(main())


class OutOfMemoryAbove(RecordingForward):
    """Runs out of device memory on batches of more than ``most`` rows."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self.most = most

    def forward(self, batch: Sequence[Encoded], key: Hashable) -> torch.Tensor:
        if len(batch) > self.most:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(batch, key)


def test_out_of_memory_splits_the_batch_once_then_fails_only_that_request_with_a_typed_error() -> None:
    async def main() -> None:
        split_ok = OutOfMemoryAbove(most=4)  # a batch of 8 fails, its halves of 4 succeed
        scheduler = await started(split_ok, config(max_tokens=8 * 8, max_batch=8))
        got = await scheduler.submit(items(1, 8), "k")
        assert got[:, 0].tolist() == expected(items(1, 8))
        assert [len(ids) for ids, _ in split_ok.batches] == [4, 4]
        await scheduler.close()

        hopeless = OutOfMemoryAbove(most=1)  # the halves of 4 fail too: a typed 503 for this request only
        scheduler = await started(hopeless, config(max_tokens=8 * 8, max_batch=8))
        with pytest.raises(OutOfMemory, match="ran out of memory on a batch of 8"):
            await scheduler.submit(items(1, 8), "k")
        assert (await scheduler.submit(items(100, 1), "k"))[:, 0].tolist() == expected(items(100, 1))
        await scheduler.close()

    asyncio.run(main())


def test_sheddable_work_waits_its_turn_and_gives_its_room_up() -> None:
    """Shadow-style optional work: admitted only up to half the queue, computed only when nothing else waits,
    and failed (Overloaded) when a served request needs its room."""

    async def main() -> None:
        forward = RecordingForward(delay=0.01)
        scheduler = await started(forward, config(max_tokens=8 * 8, max_batch=8, max_queued_items=20))
        blocker = asyncio.create_task(scheduler.submit(items(1, 8), "k"))  # keeps the worker busy first
        await asyncio.sleep(0.005)
        with pytest.raises(Overloaded):
            await scheduler.submit(items(500, 11), "k", sheddable=True)  # over half the queue
        optional = asyncio.create_task(scheduler.submit(items(600, 9), "k", sheddable=True))
        await asyncio.sleep(0)
        served = asyncio.create_task(scheduler.submit(items(700, 8), "k"))  # fits next to the optional work
        assert (await served)[:, 0].tolist() == expected(items(700, 8))
        assert (await optional)[:, 0].tolist() == expected(items(600, 9))
        served_done = max(n for n, (ids, _) in enumerate(forward.batches) if any(i >= 700 for i in ids))
        first_optional = min(n for n, (ids, _) in enumerate(forward.batches) if any(600 <= i < 700 for i in ids))
        assert first_optional > served_done  # the served request went first although it arrived later
        await blocker

        slow = RecordingForward(delay=0.05)
        scheduler2 = await started(slow, config(max_tokens=8 * 8, max_batch=8, max_queued_items=20))
        busy = asyncio.create_task(scheduler2.submit(items(1, 8), "k"))
        await asyncio.sleep(0.005)
        shed = asyncio.create_task(scheduler2.submit(items(600, 9), "k", sheddable=True))
        await asyncio.sleep(0)
        needs_room = await scheduler2.submit(items(800, 15), "k")  # 9 + 15 > 20: the optional work is shed
        assert needs_room.shape == (15, 1)
        with pytest.raises(Overloaded, match="shed"):
            await shed
        await busy
        await scheduler.close()
        await scheduler2.close()

    asyncio.run(main())


def test_optional_work_on_another_model_waits_for_the_devices_served_work() -> None:
    """A shadow model's scheduler shares the device with the served model's: its optional work starts only after
    the device has had no served request for ``quiet_s``, and runs in pools of a quarter of the budget."""

    async def main() -> None:
        activity = DeviceActivity(quiet_s=0.1)
        served_forward, shadow_forward = RecordingForward(delay=0.02), RecordingForward()
        served = Scheduler(served_forward, config(max_tokens=8 * 8, max_batch=8), name="served", activity=activity)
        shadow = Scheduler(shadow_forward, config(max_tokens=8 * 8, max_batch=8), name="shadow", activity=activity)
        served.start()
        shadow.start()
        busy = [asyncio.create_task(served.submit(items(100 * n, 8), "k")) for n in range(1, 4)]
        await asyncio.sleep(0.005)
        optional = asyncio.create_task(shadow.submit(items(900, 8), "k", sheddable=True))
        await asyncio.gather(*busy)
        ended = time.monotonic()
        assert shadow_forward.batches == []  # nothing optional ran while the other model served
        assert (await optional)[:, 0].tolist() == expected(items(900, 8))
        assert time.monotonic() - ended >= 0.09  # it waited for the quiet period after the last served request
        assert max(len(ids) for ids, _ in shadow_forward.batches) <= 2  # 8 rows / OPTIONAL_SHARE
        assert activity.busy == 0
        await served.close()
        await shadow.close()

    asyncio.run(main())
