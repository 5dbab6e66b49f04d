"""Score cache: a scored (query, document) pair is remembered under (model, scoring settings, query, document).

Backends with one async interface: an in-process LRU bounded by entries *and* bytes (the default), and Redis, which
several replicas can share (``redis://host:port/db``; :mod:`rerankd.server.redis_cache`). A cache is an
optimisation, never a source of failure or delay: every backend answers a miss rather than an error, and a slow or
frozen Redis costs a request at most its short read timeout before a circuit breaker takes it out of the path.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

KEY_PREFIX = "rerankd:score:v1"
# Bytes an LRU entry costs beyond its key and row objects: the OrderedDict slot and node, the CachedScore object.
ENTRY_OVERHEAD_BYTES = 200


@dataclass(frozen=True, slots=True)
class CachedScore:
    """What a later request needs to answer without the model: the score row, the tokens the pair used,
    and whether its document was truncated or only partly scored (for the response's warnings)."""

    row: tuple[float, ...]
    tokens: int
    cut: bool = False

    def encode(self) -> str:
        return json.dumps([list(self.row), self.tokens, self.cut], separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes) -> CachedScore:
        row, tokens, cut = json.loads(raw)
        return cls(tuple(float(x) for x in row), int(tokens), bool(cut))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def settings_digest(*parts: Any) -> str:
    """A short stable digest of everything that changes a score (model identity and scoring settings)."""
    return hashlib.sha256(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def score_key(settings: str, query: str, document: str) -> str:
    return f"{KEY_PREFIX}:{settings}:{digest(query)}:{digest(document)}"


@dataclass
class CacheStats:
    """What a cache reports to /metrics (read at scrape time)."""

    entries: int = 0
    bytes: int = 0
    available: bool = True  # False while a circuit breaker keeps a failing backend out of the request path
    errors: dict[str, int] = field(default_factory=lambda: {"read": 0, "write": 0})
    skipped_reads: int = 0  # reads not attempted because the breaker was open
    dropped_writes: int = 0  # entries not written (breaker open, or the write-behind queue full)


class ScoreCache(Protocol):
    name: str
    stats: CacheStats

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]: ...

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None: ...

    async def close(self) -> None: ...


class NoCache:
    name = "none"

    def __init__(self) -> None:
        self.stats = CacheStats()

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        return [None] * len(keys)

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None:
        return None

    async def close(self) -> None:
        return None


def entry_bytes(key: str, value: CachedScore) -> int:
    """Estimated memory of one LRU entry (key string, row tuple and floats, fixed overhead)."""
    return sys.getsizeof(key) + sys.getsizeof(value.row) + 24 * len(value.row) + ENTRY_OVERHEAD_BYTES


class MemoryCache:
    """A least-recently-used map bounded by entries and by estimated bytes; used from the event loop only."""

    name = "memory"

    def __init__(self, max_entries: int = 100_000, max_bytes: int = 64 << 20) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._entries: OrderedDict[str, tuple[CachedScore, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        out: list[CachedScore | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            out.append(entry[0] if entry is not None else None)
        return out

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None:
        for key, value in entries:
            old = self._entries.pop(key, None)
            if old is not None:
                self.stats.bytes -= old[1]
            size = entry_bytes(key, value)
            self._entries[key] = (value, size)
            self.stats.bytes += size
        while self._entries and (len(self._entries) > self.max_entries or self.stats.bytes > self.max_bytes):
            _, (_, size) = self._entries.popitem(last=False)
            self.stats.bytes -= size
        self.stats.entries = len(self._entries)

    async def close(self) -> None:
        self._entries.clear()
        self.stats.entries = self.stats.bytes = 0


class CacheCollector:
    """Exports a cache's :class:`CacheStats` to Prometheus at scrape time."""

    def __init__(self, cache: ScoreCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        stats, labels = self.cache.stats, [self.cache.name]
        entries = GaugeMetricFamily("rerankd_cache_entries", "entries held by the score cache", labels=["backend"])
        entries.add_metric(labels, stats.entries)
        size = GaugeMetricFamily(
            "rerankd_cache_bytes", "estimated bytes held by the in-process score cache", labels=["backend"]
        )
        size.add_metric(labels, stats.bytes)
        available = GaugeMetricFamily(
            "rerankd_cache_available", "1 when the cache is in the request path, 0 while its breaker is open",
            labels=["backend"],
        )  # fmt: skip
        available.add_metric(labels, 1.0 if stats.available else 0.0)
        errors = CounterMetricFamily("rerankd_cache_errors", "failed cache operations", labels=["backend", "op"])
        for op, count in stats.errors.items():
            errors.add_metric([self.cache.name, op], count)
        skipped = CounterMetricFamily(
            "rerankd_cache_skipped", "cache operations skipped while unavailable or saturated", labels=["backend", "op"]
        )
        skipped.add_metric([self.cache.name, "read"], stats.skipped_reads)
        skipped.add_metric([self.cache.name, "write"], stats.dropped_writes)
        yield from (entries, size, available, errors, skipped)


def make_cache(
    spec: str,
    *,
    max_entries: int = 100_000,
    max_bytes: int = 64 << 20,
    ttl_s: int | None = None,
    timeout_s: float = 0.05,
) -> ScoreCache:
    """``memory`` (default), ``none``, or a Redis URL (``redis://``, ``rediss://``, ``unix://``)."""
    lowered = spec.strip().lower()
    if lowered in ("", "none", "off", "false", "0"):
        return NoCache()
    if lowered == "memory":
        return MemoryCache(max_entries, max_bytes)
    if lowered.startswith(("redis://", "rediss://", "unix://")):
        from rerankd.server.redis_cache import RedisCache

        return RedisCache(spec.strip(), ttl_s=ttl_s or 7 * 24 * 3600, timeout_s=timeout_s)
    raise ValueError(f"unknown cache {spec!r}: use memory, none or a redis:// URL")
