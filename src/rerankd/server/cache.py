"""Score cache: a scored (query, document) pair is remembered under (model, scoring settings, query, document).

Two backends with one async interface: an in-process LRU (the default) and Redis, which several replicas
can share (``redis://host:port/db``). The cache is an optimisation, never a source of failure: a Redis
error is logged and counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

logger = logging.getLogger(__name__)

KEY_PREFIX = "rerankd:score:v1"


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
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def settings_digest(*parts: Any) -> str:
    """A short stable digest of everything that changes a score (model identity and scoring settings)."""
    return hashlib.sha256(repr(parts).encode("utf-8")).hexdigest()[:24]


def score_key(settings: str, query: str, document: str) -> str:
    return f"{KEY_PREFIX}:{settings}:{digest(query)}:{digest(document)}"


class ScoreCache(Protocol):
    name: str

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]: ...

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None: ...

    async def close(self) -> None: ...


class NoCache:
    name = "none"

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        return [None] * len(keys)

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryCache:
    """A bounded least-recently-used map, used from the event loop only."""

    name = "memory"

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedScore] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        out: list[CachedScore | None] = []
        for key in keys:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            out.append(value)
        return out

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None:
        for key, value in entries:
            self._entries[key] = value
            self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisCache:
    """Scores in Redis (shared by replicas), each entry with a time to live."""

    name = "redis"

    def __init__(self, url: str, ttl_s: int | None = 7 * 24 * 3600) -> None:
        import redis.asyncio as redis_asyncio

        self.url = url
        self.ttl_s = ttl_s
        self._client: Any = redis_asyncio.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def get_many(self, keys: Sequence[str]) -> list[CachedScore | None]:
        if not keys:
            return []
        try:
            values = await self._client.mget(list(keys))
        except Exception as exc:  # redis raises many types (connection, timeout, protocol): all are misses
            logger.warning("redis cache read failed (%s); scoring without the cache", type(exc).__name__)
            return [None] * len(keys)
        return [CachedScore.decode(v) if v is not None else None for v in values]

    async def set_many(self, entries: Sequence[tuple[str, CachedScore]]) -> None:
        if not entries:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in entries:
                    pipe.set(key, value.encode(), ex=self.ttl_s)
                await pipe.execute()
        except Exception as exc:  # see get_many
            logger.warning("redis cache write failed (%s)", type(exc).__name__)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:  # any failure means "not reachable"
            return False

    async def close(self) -> None:
        await self._client.aclose()


def make_cache(spec: str, *, max_entries: int = 100_000, ttl_s: int | None = None) -> ScoreCache:
    """``memory`` (default), ``none``, or a Redis URL (``redis://``, ``rediss://``, ``unix://``)."""
    lowered = spec.strip().lower()
    if lowered in ("", "none", "off", "false", "0"):
        return NoCache()
    if lowered == "memory":
        return MemoryCache(max_entries)
    if lowered.startswith(("redis://", "rediss://", "unix://")):
        return RedisCache(spec.strip(), ttl_s=ttl_s) if ttl_s else RedisCache(spec.strip())
    raise ValueError(f"unknown cache {spec!r}: use memory, none or a redis:// URL")
