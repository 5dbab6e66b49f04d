"""Where served rankings wait for their feedback, by response id, for ``RERANKD_FEEDBACK_TTL_S`` seconds.

- ``memory`` (default): this process's memory, bounded in entries; feedback must reach the replica that served.
- ``redis://host:port/db`` (``--feedback-store``): one Redis that every replica shares, so feedback may reach any
  replica. Keys ``rerankd:served:v1:<id>`` expire in Redis after the TTL.

A store is never allowed to slow or fail a rerank request: :meth:`remember` returns at once (Redis writes are
write-behind: a bounded queue that one background task flushes with pipelined ``SET … PX``; dropped, and counted,
while a circuit breaker keeps an unreachable Redis out of use, or when the queue is full). Only feedback waits for
Redis, at most a short timeout, and an id that cannot be looked up then raises
:class:`~rerankd.errors.StoreUnavailable` (503), never an unexpected error. The breaker (the score cache's) stops
even that wait after three failures in a row, for five seconds at a time; then one operation probes Redis again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from rerankd.errors import StoreUnavailable
from rerankd.server.admin.feedback import Served
from rerankd.server.redis_cache import CircuitBreaker, WriteBehind

logger = logging.getLogger(__name__)
KEY_PREFIX = "rerankd:served:v1:"


def encode(served: Served) -> str:
    return json.dumps(
        {"route": served.route, "arm": served.arm, "order": list(served.order), "at": served.at}, separators=(",", ":")
    )


def decode(raw: str | bytes) -> Served:
    data = json.loads(raw)
    return Served(str(data["route"]), str(data["arm"]), tuple(int(i) for i in data["order"]), float(data["at"]))


@dataclass
class StoreStats:
    """What a store reports to /metrics (read at scrape time)."""

    available: bool = True  # False while a circuit breaker keeps a failing Redis out of use
    errors: dict[str, int] = field(default_factory=lambda: {"read": 0, "write": 0})
    dropped: int = 0  # served rankings not remembered (Redis unreachable, or the write queue full)


class ServedRankings(Protocol):
    name: str
    ttl_s: float
    stats: StoreStats

    def remember(self, response_id: str, served: Served) -> None:
        """Keep ``served`` under ``response_id``; returns at once and never raises."""

    async def get(self, response_id: str) -> Served | None:
        """The ranking served under ``response_id``; None when unknown or older than the TTL. Raises
        StoreUnavailable when the store cannot answer."""

    async def close(self) -> None: ...


class MemoryServedStore:
    """This process's served rankings: bounded in entries and in ranked documents (oldest dropped first) and in
    time (expired entries are dropped as new ones arrive)."""

    name = "memory"

    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0, max_positions: int = 2_000_000) -> None:
        self.max_entries = max_entries
        self.max_positions = max_positions  # ranked documents held in all (memory: ~36 bytes each at most)
        self.ttl_s = ttl_s
        self.stats = StoreStats()
        self._entries: OrderedDict[str, Served] = OrderedDict()
        self._positions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, response_id: str, served: Served) -> None:
        old = self._entries.pop(response_id, None)
        self._positions += len(served.order) - (len(old.order) if old is not None else 0)
        self._entries[response_id] = served
        expired = time.time() - self.ttl_s
        while self._entries and (
            len(self._entries) > self.max_entries
            or self._positions > self.max_positions
            or next(iter(self._entries.values())).at < expired
        ):  # oldest first: over either bound, or past the feedback window
            self._positions -= len(self._entries.popitem(last=False)[1].order)

    async def get(self, response_id: str) -> Served | None:
        served = self._entries.get(response_id)
        if served is None or time.time() - served.at > self.ttl_s:
            return None
        return served

    async def close(self) -> None:
        self._entries.clear()
        self._positions = 0


class RedisServedStore:
    """Served rankings in Redis, shared by every replica that names the same Redis; each key expires after the TTL."""

    name = "redis"

    def __init__(
        self,
        url: str,
        ttl_s: float = 3600.0,
        *,
        timeout_s: float = 0.25,
        breaker: CircuitBreaker | None = None,
        max_pending: int = 50_000,
    ) -> None:
        import redis.asyncio as redis_asyncio

        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.breaker = breaker or CircuitBreaker(what="redis feedback store")
        self.stats = StoreStats()
        self._client: Any = redis_asyncio.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        # Written soon; a lookup on this replica finds them there first (response id -> encoded ranking).
        self._writes: WriteBehind[str] = WriteBehind(
            self._write, self.breaker, name="rerankd-served-writer", timeout_s=timeout_s * 2, max_pending=max_pending,
            dropped=self._count_dropped, failed=lambda exc: self._failed("write", exc), succeeded=self._succeeded,
            probe=True,
        )  # fmt: skip

    def remember(self, response_id: str, served: Served) -> None:
        self._writes.put([(response_id, encode(served))])

    async def get(self, response_id: str) -> Served | None:
        raw: str | bytes | None = self._writes.get(response_id)
        if raw is None:
            if not self.breaker.allow():
                raise StoreUnavailable("the feedback store (Redis) is unreachable; retry in a few seconds")
            try:
                raw = await asyncio.wait_for(self._client.get(KEY_PREFIX + response_id), self.timeout_s)
            except Exception as exc:  # redis raises many types (connection, timeout, protocol)
                self._failed("read", exc)
                raise StoreUnavailable("the feedback store (Redis) did not answer; retry in a few seconds") from None
            self._succeeded()
        if raw is None:
            return None
        served = decode(raw)
        return None if time.time() - served.at > self.ttl_s else served

    async def flush(self) -> None:
        """Wait until every queued write has been attempted (tests, shutdown)."""
        await self._writes.flush()

    async def close(self) -> None:
        await self._writes.close()
        await self._client.aclose()

    # ------------------------------------------------------------------ internals
    def _count_dropped(self, count: int) -> None:
        self.stats.dropped += count

    async def _write(self, batch: list[tuple[str, str]]) -> None:
        ttl_ms = max(1, round(self.ttl_s * 1000))
        async with self._client.pipeline(transaction=False) as pipe:
            for response_id, value in batch:
                pipe.set(KEY_PREFIX + response_id, value, px=ttl_ms)
            await pipe.execute()

    def _failed(self, op: str, exc: BaseException) -> None:
        self.stats.errors[op] += 1
        logger.debug("redis feedback store %s failed: %s", op, type(exc).__name__)
        self.breaker.failed()
        self.stats.available = self.breaker.closed

    def _succeeded(self) -> None:
        self.breaker.succeeded()
        self.stats.available = True


def make_served_store(spec: str, ttl_s: float) -> ServedRankings:
    """``memory`` (default) or a Redis URL (``redis://``, ``rediss://``, ``unix://``)."""
    lowered = spec.strip().lower()
    if lowered in ("", "memory"):
        return MemoryServedStore(ttl_s=ttl_s)
    if lowered.startswith(("redis://", "rediss://", "unix://")):
        return RedisServedStore(spec.strip(), ttl_s=ttl_s)
    raise ValueError(f"unknown feedback store {spec!r}: use memory or a redis:// URL")


class StoreCollector:
    """Exports a served-ranking store's :class:`StoreStats` to Prometheus at scrape time."""

    def __init__(self, store: ServedRankings) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        stats, backend = self.store.stats, [self.store.name]
        available = GaugeMetricFamily(
            "rerankd_feedback_store_available", "1 while the store is in use, 0 while its breaker is open",
            labels=["backend"],
        )  # fmt: skip
        available.add_metric(backend, 1.0 if stats.available else 0.0)
        errors = CounterMetricFamily(
            "rerankd_feedback_store_errors", "failed operations of the served-ranking store", labels=["backend", "op"]
        )
        for op, count in stats.errors.items():
            errors.add_metric([self.store.name, op], count)
        dropped = CounterMetricFamily(
            "rerankd_feedback_store_dropped", "served rankings not remembered (store unreachable or saturated)",
            labels=["backend"],
        )  # fmt: skip
        dropped.add_metric(backend, stats.dropped)
        yield from (available, errors, dropped)
