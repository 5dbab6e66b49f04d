"""Dynamic batching across requests: one queue per model, batches cut by a token budget, fair service.

Each request (a *ticket*) brings a list of encoded items and a batch key (requests with different keys,
e.g. different ``CallOptions``, never share a forward pass). A single dispatcher task per model repeatedly
cuts a *pool* of items that fits the token budget, taken across the waiting requests, lets
:func:`~rerankd.runtime.planner.plan_batches` order it into batches and hands each batch to the model's
:class:`~rerankd.runtime.worker.Worker` in a thread, off the event loop. Results go back to each request in
its own item order.

Fairness: tickets are served smallest-remaining first (a 5-item request that arrives behind a 1,000-item one
goes into the very next pool), and the oldest ticket always gets a quarter of every pool, so a large request
keeps moving however many small ones arrive. Keys take turns when several are waiting.

Backpressure and failure: the queue is bounded in items (``Overloaded``); a request that is cancelled (its
client went away) or times out has its undispatched items dropped; an exception in a forward pass fails the
requests whose items were in that batch, and only those. The scheduler knows nothing of HTTP or of what a
score means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from rerankd.errors import DeadlineExceeded, NotReady, Overloaded, PayloadTooLarge
from rerankd.families.base import BatchKey, Encoded
from rerankd.runtime.activity import DeviceActivity
from rerankd.runtime.planner import TokenBudget, padded_length, plan_batches
from rerankd.runtime.worker import Worker, forward_splitting_on_oom

logger = logging.getLogger(__name__)

OLDEST_SHARE = 4  # the oldest ticket gets 1/OLDEST_SHARE of each pool
OPTIONAL_SHARE = 4  # a pool of optional work only is 1/OPTIONAL_SHARE of the budget: served arrivals wait less


class SchedulerObserver(Protocol):
    """What the scheduler reports (the server turns it into metrics)."""

    def depth(self, items: int) -> None: ...

    def waited(self, seconds: float) -> None: ...

    def batch(self, rows: int, tokens: int, padded_tokens: int, seconds: float) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def dropped(self, items: int) -> None: ...


class NullObserver:
    def depth(self, items: int) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass

    def batch(self, rows: int, tokens: int, padded_tokens: int, seconds: float) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass

    def dropped(self, items: int) -> None:
        pass


@dataclass(eq=False)
class _Ticket:
    items: Sequence[Encoded]
    key: BatchKey
    priority: int
    arrival: float
    future: asyncio.Future[torch.Tensor]
    order: list[int] = field(default_factory=list)  # item positions, longest first
    taken: int = 0  # how many of ``order`` went into pools
    done: int = 0
    parts: list[tuple[list[int], torch.Tensor]] = field(default_factory=list)
    served: bool = False  # some of its items went into a pool
    finished: bool = False
    sheddable: bool = False  # optional work (shadow scoring): dropped first when the queue is needed

    @property
    def remaining(self) -> int:
        return len(self.order) - self.taken


Member = tuple[_Ticket, int]  # (ticket, item position)


@dataclass(frozen=True)
class SchedulerConfig:
    budget: TokenBudget
    max_queued_items: int = 4096
    max_queued_tokens: int = 1 << 20
    timeout_s: float | None = 30.0
    retry_after_s: float = 1.0


class Scheduler:
    """The batching queue of one model. Create it inside a running event loop, then :meth:`start` it."""

    def __init__(
        self,
        worker: Worker,
        config: SchedulerConfig,
        *,
        observer: SchedulerObserver | None = None,
        name: str = "",
        activity: DeviceActivity | None = None,
    ) -> None:
        self._worker = worker
        self._activity = activity or DeviceActivity()  # shared by the schedulers of one device
        self.config = config
        self.name = name
        self._observer = observer or NullObserver()
        self._tickets: list[_Ticket] = []  # waiting for (more of) their items to be taken into a pool
        self._open: set[_Ticket] = set()  # every ticket not finished yet, including those whose items all run now
        self._queued = 0
        self._queued_tokens = 0
        self._in_flight = 0
        self._last_key: BatchKey | None = None
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"rerankd-forward-{name}")
        self._task: asyncio.Task[None] | None = None

    @property
    def queued_items(self) -> int:
        """Items waiting for a forward pass (not counting the batch that is running)."""
        return self._queued

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name=f"rerankd-scheduler-{self.name}")

    async def submit(
        self,
        items: Sequence[Encoded],
        key: BatchKey,
        *,
        priority: int = 0,
        timeout_s: float | None = None,
        sheddable: bool = False,
    ) -> torch.Tensor:
        """Raw forward outputs for ``items``, in their order. Cancelling the caller drops the queued items.

        ``sheddable`` work (shadow scoring) is only admitted while the queue is at most half full, and is failed
        with :class:`Overloaded` whenever the room it takes is needed by a request that is not sheddable."""
        if self._closing or self._task is None:
            raise NotReady("the server is shutting down" if self._closing else "the scheduler is not running")
        if not items:
            return torch.empty(0)
        tokens = sum(len(item) for item in items)
        self._admit(len(items), tokens, sheddable)
        loop = asyncio.get_running_loop()
        ticket = _Ticket(items, key, priority, time.monotonic(), loop.create_future(), sheddable=sheddable)
        ticket.order = sorted(range(len(items)), key=lambda i: -len(items[i]))
        self._tickets.append(ticket)
        self._open.add(ticket)
        self._queued += len(items)
        self._queued_tokens += tokens
        self._idle.clear()
        self._observer.depth(self._queued)
        self._wakeup.set()
        limit = timeout_s if timeout_s is not None else self.config.timeout_s
        if not sheddable:
            self._activity.enter()
        try:
            return await asyncio.wait_for(ticket.future, limit)
        except asyncio.TimeoutError:
            self._observer.rejected("timeout")
            raise DeadlineExceeded(
                f"the request did not finish within {limit:g} s; the server is over capacity",
                retry_after_s=self.config.retry_after_s,
            ) from None
        finally:
            if not sheddable:
                self._activity.leave()
            if not ticket.finished:
                self._drop(ticket)

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new work, let queued work finish (up to ``drain_timeout_s``), then stop."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
        except asyncio.TimeoutError:
            logger.warning("scheduler %s: %d items still queued at shutdown; failing them", self.name, self._queued)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail(list(self._open), NotReady("the server is shutting down; the request did not finish in time"))
        self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ queue bookkeeping
    def _admit(self, n: int, tokens: int, sheddable: bool = False) -> None:
        """Refuse a request larger than the whole queue (413: retrying cannot help) or one that does not fit
        next to the work already queued (429 with Retry-After), counting model inputs and tokens. Sheddable work
        is refused past half the queue, and gives its room up to other work."""
        items_limit, tokens_limit = self.config.max_queued_items, self.config.max_queued_tokens
        if sheddable:
            if self._queued + n > items_limit // 2 or self._queued_tokens + tokens > tokens_limit // 2:
                self._observer.rejected("shed")
                raise Overloaded("shed: optional work is only queued while the queue is less than half full")
            return
        if self._queued + n > items_limit or self._queued_tokens + tokens > tokens_limit:
            self._shed(self._queued + n - items_limit, self._queued_tokens + tokens - tokens_limit)
        if n > items_limit or tokens > tokens_limit:
            self._observer.rejected("too_large")
            raise PayloadTooLarge(
                f"the request needs {n} model inputs ({tokens} tokens) after chunking; one request may queue at "
                f"most {items_limit} inputs and {tokens_limit} tokens. Send fewer or shorter documents",
                param="documents",
            )
        if self._queued + n > items_limit or self._queued_tokens + tokens > tokens_limit:
            self._observer.rejected("queue_full")
            raise Overloaded(
                f"the queue of {self.name or 'this model'} is full ({self._queued} inputs and {self._queued_tokens} "
                f"tokens waiting, limits {items_limit} and {tokens_limit}); retry later",
                retry_after_s=self.config.retry_after_s,
            )

    def _shed(self, items: int, tokens: int) -> None:
        """Fail waiting sheddable tickets, newest first, until ``items`` and ``tokens`` of room are free."""
        for ticket in sorted((t for t in self._tickets if t.sheddable), key=lambda t: -t.arrival):
            if items <= 0 and tokens <= 0:
                return
            items -= ticket.remaining
            tokens -= sum(len(ticket.items[i]) for i in ticket.order[ticket.taken :])
            self._observer.rejected("shed")
            self._fail([ticket], Overloaded("shed: the queue was needed by served requests"))

    def _drop(self, ticket: _Ticket) -> None:
        """Forget a ticket whose caller is gone: its undispatched items never run."""
        ticket.finished = True
        self._open.discard(ticket)
        if ticket in self._tickets:
            self._tickets.remove(ticket)
            self._queued -= ticket.remaining
            self._queued_tokens -= sum(len(ticket.items[i]) for i in ticket.order[ticket.taken :])
            self._observer.dropped(ticket.remaining)
            self._observer.depth(self._queued)
        self._update_idle()

    def _fail(self, tickets: Sequence[_Ticket], error: BaseException) -> None:
        for ticket in tickets:
            if ticket.finished:
                continue
            if not ticket.future.done():
                ticket.future.set_exception(error)
            self._drop(ticket)

    def _update_idle(self) -> None:
        if not self._tickets and self._in_flight == 0:
            self._idle.set()

    # ------------------------------------------------------------------ dispatch
    async def _dispatch(self) -> None:
        while True:
            if not self._tickets:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if all(t.sheddable for t in self._tickets) and (quiet := self._activity.quiet_for()) > 0:
                await self._wait_wakeup(quiet)  # optional work only: after the device has had no served work
                continue
            pool = self._cut_pool()
            self._observer.depth(self._queued)
            self._in_flight += len(pool)
            try:
                await self._run_pool(pool)
            finally:
                self._in_flight -= len(pool)
                self._update_idle()

    async def _wait_wakeup(self, seconds: float) -> None:
        self._wakeup.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    def _next_key(self) -> BatchKey:
        pending = [t for t in self._tickets if not t.sheddable] or self._tickets  # optional work waits its turn
        keys = {t.key for t in pending}
        candidates = pending if len(keys) == 1 else [t for t in pending if t.key != self._last_key]
        first = min(candidates, key=lambda t: (t.priority, t.arrival))
        self._last_key = first.key
        return first.key

    def _cut_pool(self) -> list[Member]:
        """Items for the next forward passes: one token budget's worth, fairly shared between tickets."""
        key = self._next_key()
        group = sorted((t for t in self._tickets if t.key == key), key=lambda t: (t.priority, t.remaining, t.arrival))
        if any(not t.sheddable for t in group):  # optional work runs only in pools nobody else needs
            group = [t for t in group if not t.sheddable]
        oldest = min(group, key=lambda t: t.arrival)
        budget, multiple = self.config.budget, self._worker.limits.pad_to_multiple_of
        rows, tokens = budget.max_batch_size, budget.max_tokens
        if group[0].sheddable:  # optional work only: a smaller pool, so a served arrival waits less behind it
            rows, tokens = max(1, rows // OPTIONAL_SHARE), max(1, tokens // OPTIONAL_SHARE)
        pool: list[Member] = []
        width = 0

        def take(ticket: _Ticket, most: int) -> bool:
            """Move up to ``most`` items of ``ticket`` into the pool; False once the pool is full."""
            nonlocal width
            for _ in range(most):
                if ticket.remaining == 0:
                    return True
                if len(pool) >= rows or (len(pool) + 1) * width > tokens:
                    return False
                position = ticket.order[ticket.taken]
                new_width = max(width, padded_length(len(ticket.items[position]), multiple))
                if pool and (len(pool) + 1) * new_width > tokens:
                    return True  # too wide for this pool: try the other tickets' (shorter) items
                pool.append((ticket, position))
                ticket.taken += 1
                width = new_width
            return True

        now = time.monotonic()
        if oldest is not group[0]:
            first_len = max(len(oldest.items[oldest.order[oldest.taken]]), 1)
            take(oldest, max(1, min(rows, tokens // first_len) // OLDEST_SHARE))
        for ticket in group:
            if not take(ticket, ticket.remaining):
                break
        for ticket in {id(t): t for t, _ in pool}.values():
            if not ticket.served:
                ticket.served = True
                self._observer.waited(now - ticket.arrival)
            if ticket.remaining == 0:
                self._tickets.remove(ticket)
        self._queued -= len(pool)
        self._queued_tokens -= sum(len(t.items[p]) for t, p in pool)
        return pool

    async def _run_pool(self, pool: list[Member]) -> None:
        multiple = self._worker.limits.pad_to_multiple_of
        plan = plan_batches([len(t.items[p]) for t, p in pool], self.config.budget, multiple)
        loop = asyncio.get_running_loop()
        for batch in plan:
            members = [pool[i] for i in batch if not pool[i][0].finished]
            if not members:
                continue
            distinct: dict[Encoded, int] = {}
            slots = [distinct.setdefault(t.items[p], len(distinct)) for t, p in members]
            inputs = list(distinct)
            started = time.perf_counter()
            try:
                key = members[0][0].key
                raw = await loop.run_in_executor(self._executor, forward_splitting_on_oom, self._worker, inputs, key)
            except Exception as exc:  # a failed batch fails its own requests; the others go on
                logger.exception("forward pass failed on %s (%d rows); failing its requests", self.name, len(inputs))
                self._fail(list({id(t): t for t, _ in members}.values()), exc)
                continue
            longest = max(padded_length(len(item), multiple) for item in inputs)
            tokens = sum(len(item) for item in inputs)
            self._observer.batch(len(inputs), tokens, longest * len(inputs), time.perf_counter() - started)
            self._deliver(members, raw[torch.tensor(slots, dtype=torch.long)])

    def _deliver(self, members: list[Member], rows: torch.Tensor) -> None:
        by_ticket: dict[int, tuple[_Ticket, list[int], list[int]]] = {}
        for row, (ticket, position) in enumerate(members):
            entry = by_ticket.setdefault(id(ticket), (ticket, [], []))
            entry[1].append(position)
            entry[2].append(row)
        for ticket, positions, row_ids in by_ticket.values():
            if ticket.finished:
                continue
            ticket.parts.append((positions, rows[torch.tensor(row_ids, dtype=torch.long)]))
            ticket.done += len(positions)
            if ticket.done == len(ticket.items):
                ticket.finished = True
                self._open.discard(ticket)
                if not ticket.future.done():
                    ticket.future.set_result(_assemble(len(ticket.items), ticket.parts))


def _assemble(n: int, parts: list[tuple[list[int], torch.Tensor]]) -> torch.Tensor:
    first = parts[0][1]
    out = first.new_empty((n, *first.shape[1:]))
    for positions, rows in parts:
        out[torch.tensor(positions, dtype=torch.long)] = rows
    return out
