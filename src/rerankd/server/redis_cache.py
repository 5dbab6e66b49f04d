"""The Redis score cache: shared by replicas, and never allowed to slow a request down.

- **Short timeouts**: a read waits at most ``timeout_s`` (default 50 ms), then counts as a miss.
- **Circuit breaker**: after ``failures`` consecutive failed operations the cache leaves the request path for
  ``backoff_s``; then one read probes it (others still skip) and a success closes the breaker again, so a frozen or
  dead Redis costs a few requests one timeout each, then nothing, and recovers by itself.
- **Write-behind**: writes go to a bounded in-process queue that one background task flushes with pipelined SETs;
  a request never waits for a write. While the breaker is open, or when the queue is full, writes are dropped and
  counted (a cache may forget; it must not block).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

from rerankd.server.cache import CachedScore, CacheStats

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed (use the backend) until ``failures`` consecutive failures; then open for ``backoff_s``; then one
    caller at a time may probe (half-open) until a success closes it or a failure opens it again."""

    def __init__(
        self,
        failures: int = 3,
        backoff_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        what: str = "redis cache",
    ) -> None:
        self.failures = failures
        self.what = what  # named in the log lines
        self.backoff_s = backoff_s
        self._clock = clock
        self._consecutive = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def closed(self) -> bool:
        return self._open_until is None

    def allow(self) -> bool:
        """Whether a caller may use the backend now (claims the probe when half-open)."""
        if self._open_until is None:
            return True
        if self._probing or self._clock() < self._open_until:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        if self._open_until is not None:
            logger.info("%s reachable again; back in use", self.what)
        self._consecutive, self._open_until, self._probing = 0, None, False

    def failed(self) -> None:
        self._consecutive += 1
        was_open = self._open_until is not None
        if was_open or self._consecutive >= self.failures:
            self._open_until = self._clock() + self.backoff_s
            if not was_open:
                logger.warning("%s failing; out of use for %.1f s at a time", self.what, self.backoff_s)
        self._probing = False


V = TypeVar("V")


class WriteBehind(Generic[V]):
    """Writes that never hold a request: ``put`` queues ``(key, value)`` pairs (a bounded, insertion-ordered queue; a
    newer value for a queued key replaces it) and one background task sends them to ``write`` in batches of
    ``BATCH``, each within ``timeout_s``. A batch the ``breaker`` does not let through, or whose write fails, is
    dropped and reported through ``dropped``; failures and successes go to ``failed`` / ``succeeded`` (the owner's
    breaker and stats). ``probe``: whether a write may be the breaker's half-open probe (else writes wait for it
    to close). Queued values stay readable through :meth:`get` until their write was attempted."""

    BATCH = 500

    def __init__(
        self,
        write: Callable[[list[tuple[str, V]]], Awaitable[None]],
        breaker: CircuitBreaker,
        *,
        name: str,
        timeout_s: float,
        max_pending: int,
        dropped: Callable[[int], None],
        failed: Callable[[BaseException], None],
        succeeded: Callable[[], None],
        probe: bool = False,
    ) -> None:
        self._write, self._breaker, self._name, self._timeout_s = write, breaker, name, timeout_s
        self._max_pending, self._probe = max_pending, probe
        self._dropped, self._failed, self._succeeded = dropped, failed, succeeded
        self._pending: OrderedDict[str, V] = OrderedDict()
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, entries: Sequence[tuple[str, V]]) -> None:
        """Queue what fits (the rest is dropped and counted); returns at once."""
        room = max(self._max_pending - len(self._pending), 0)
        if room < len(entries):
            self._dropped(len(entries) - room)
        if room:
            self._pending.update(entries[:room])
            self._ensure_writer().set()

    def get(self, key: str) -> V | None:
        return self._pending.get(key)

    async def flush(self) -> None:
        """Wait until every queued write has been attempted (tests, shutdown)."""
        while self._pending and self._writer is not None and not self._writer.done():
            await asyncio.sleep(0.005)

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.flush(), 1.0)
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    def _ensure_writer(self) -> asyncio.Event:
        if self._wakeup is None or self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._run(), name=self._name)
        return self._wakeup

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = list(itertools.islice(self._pending.items(), self.BATCH))
            if self._breaker.allow() if self._probe else self._breaker.closed:
                try:
                    await asyncio.wait_for(self._write(batch), self._timeout_s)
                except Exception as exc:  # redis raises many types (connection, timeout, protocol)
                    self._dropped(len(batch))
                    self._failed(exc)
                else:
                    self._succeeded()
            else:
                self._dropped(len(batch))
            for key, value in batch:
                if self._pending.get(key) is value:  # not replaced by a newer value meanwhile
                    del self._pending[key]


class RedisCache:
    """Scores in Redis (shared by replicas), each entry with a time to live."""

    name = "redis"

    def __init__(
        self,
        url: str,
        ttl_s: int | None = 7 * 24 * 3600,
        *,
        timeout_s: float = 0.05,
        breaker: CircuitBreaker | None = None,
        max_pending_writes: int = 50_000,
    ) -> None:
        import redis.asyncio as redis_asyncio

        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker()
        self.stats = CacheStats()
        # The socket timeouts are a backstop; every call is also bounded by asyncio.wait_for(timeout_s).
        self._client: Any = redis_asyncio.from_url(
            url, socket_timeout=max(4 * timeout_s, 0.2), socket_connect_timeout=max(4 * timeout_s, 0.2)
        )
        self._writes: WriteBehind[CachedScore] = WriteBehind(
            self._write, self.breaker, name="rerankd-cache-writer", timeout_s=max(timeout_s * 4, 0.2),
            max_pending=max_pending_writes, dropped=self._count_dropped,
            failed=lambda exc: self._failed("write", exc), succeeded=self._succeeded,
        )  # fmt: skip

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        if not keys:
            return []
        if not self.breaker.allow():
            self.stats.skipped_reads += 1
            return [None] * len(keys)
        try:
            values = await asyncio.wait_for(self._client.mget(list(keys)), self.timeout_s)
        except Exception as exc:  # redis raises many types (connection, timeout, protocol): all are misses
            self._failed("read", exc)
            return [None] * len(keys)
        self._succeeded()
        return [CachedScore.decode(v) if v is not None else None for v in values]

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None:
        """Queue ``entries`` for the background writer; returns at once."""
        if not entries:
            return
        if not self.breaker.closed:
            self.stats.dropped_writes += len(entries)
            return
        self._writes.put(entries)

    async def flush(self) -> None:
        """Wait until every queued write has been attempted (tests, shutdown)."""
        await self._writes.flush()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.ping(), max(self.timeout_s, 0.5)))
        except Exception:  # any failure means "not reachable"
            return False

    async def close(self) -> None:
        await self._writes.close()
        await self._client.aclose()

    # ------------------------------------------------------------------ internals
    def _count_dropped(self, count: int) -> None:
        self.stats.dropped_writes += count

    async def _write(self, batch: list[tuple[str, CachedScore]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for key, value in batch:
                pipe.set(key, value.encode(), ex=self.ttl_s)
            await pipe.execute()

    def _failed(self, op: str, exc: BaseException) -> None:
        self.stats.errors[op] += 1
        logger.debug("redis cache %s failed: %s", op, type(exc).__name__)
        self.breaker.failed()
        self.stats.available = self.breaker.closed

    def _succeeded(self) -> None:
        self.breaker.succeeded()
        self.stats.available = True
