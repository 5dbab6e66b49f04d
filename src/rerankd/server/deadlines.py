"""End-to-end request deadlines.

A request's ``--timeout`` starts when it arrives (the middleware stamps ``scope["state"]["arrived"]``) and covers
everything after: the cache lookup, tokenisation (in a worker thread), queueing and the forward passes. When it
passes, the client gets the documented 429 (code ``timeout``) at once; tokenisation still running in its thread is
abandoned at its next checkpoint, and queued items are dropped by the scheduler.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from rerankd.errors import DeadlineExceeded
from rerankd.jobs import Budget

T = TypeVar("T")


class Abandoned(Exception):
    """Raised inside an abandoned preparation thread; nobody waits for it any more."""


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() by which the request must be answered
    limit_s: float  # the configured time limit, for the error message
    retry_after_s: float = 1.0

    @classmethod
    def starting(cls, arrived: float | None, limit_s: float, retry_after_s: float = 1.0) -> Deadline:
        return cls((arrived if arrived is not None else time.monotonic()) + limit_s, limit_s, retry_after_s)

    def remaining(self) -> float:
        return max(self.at - time.monotonic(), 0.0)

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the request did not finish within {self.limit_s:g} s; the server is over capacity",
            retry_after_s=self.retry_after_s,
        )


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned thread's outcome so asyncio does not report it as never retrieved."""
    if not future.cancelled():
        future.exception()


async def in_thread(work: Callable[[Budget], T], deadline: Deadline, max_items: int | None = None) -> T:
    """Run ``work(budget)`` in a worker thread within ``deadline``; on timeout or cancellation the thread is told to
    stop (its budget's checkpoint raises) and the caller gets :class:`DeadlineExceeded` (or the cancellation)."""
    stop = threading.Event()

    def checkpoint() -> None:
        if stop.is_set():
            raise Abandoned

    future = asyncio.get_running_loop().run_in_executor(None, work, Budget(checkpoint, max_items))
    future.add_done_callback(_consume)
    try:
        return await asyncio.wait_for(asyncio.shield(future), deadline.remaining())
    except asyncio.TimeoutError:
        stop.set()
        raise deadline.exceeded() from None
    except asyncio.CancelledError:
        stop.set()
        raise
