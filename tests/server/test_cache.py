"""The score cache backends and keys (Redis against a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from rerankd.jobs import ScoreOptions
from rerankd.server.cache import (
    CachedScore,
    MemoryCache,
    NoCache,
    entry_bytes,
    make_cache,
    score_key,
    settings_digest,
)
from rerankd.server.redis_cache import CircuitBreaker, RedisCache

pytestmark = pytest.mark.timeout(60)


def test_keys_separate_model_settings_query_and_document() -> None:
    base = settings_digest("model-a", ScoreOptions(normalize=True))
    keys = {
        score_key(base, "q", "d"),
        score_key(settings_digest("model-b", ScoreOptions(normalize=True)), "q", "d"),
        score_key(settings_digest("model-a", ScoreOptions(normalize=False)), "q", "d"),
        score_key(settings_digest("model-a", ScoreOptions(normalize=True, max_chunks_per_doc=3)), "q", "d"),
        score_key(base, "q2", "d"),
        score_key(base, "q", "d2"),
    }
    assert len(keys) == 6
    assert score_key(base, "q", "d") == score_key(settings_digest("model-a", ScoreOptions(normalize=True)), "q", "d")


def test_memory_cache_is_a_bounded_lru() -> None:
    async def main() -> None:
        cache = MemoryCache(max_entries=2)
        await cache.set_many([("a", CachedScore((0.1,), 5)), ("b", CachedScore((0.2,), 6, cut=True))])
        assert await cache.get_many(["a"]) == [CachedScore((0.1,), 5)]  # "a" is now the most recent
        await cache.set_many([("c", CachedScore((0.3,), 7))])
        assert await cache.get_many(["a", "b", "c"]) == [CachedScore((0.1,), 5), None, CachedScore((0.3,), 7)]
        assert len(cache) == 2

    asyncio.run(main())


def test_memory_cache_is_bounded_by_bytes_too() -> None:
    async def main() -> None:
        row = CachedScore((0.5,), 3)
        one = entry_bytes("k000", row)
        cache = MemoryCache(max_entries=1_000, max_bytes=10 * one + 100)
        await cache.set_many([(f"k{i:03d}", row) for i in range(25)])
        assert len(cache) == 10 and cache.stats.entries == 10
        assert cache.stats.bytes == 10 * one
        assert await cache.get_many(["k014", "k015", "k024"]) == [None, row, row]  # the oldest went first
        await cache.set_many([("k015", CachedScore((0.1, 0.2, 0.3), 4))])  # replacing an entry re-counts it
        assert cache.stats.bytes == 9 * one + entry_bytes("k015", CachedScore((0.1, 0.2, 0.3), 4))

    asyncio.run(main())


def test_circuit_breaker_opens_backs_off_probes_once_and_closes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, backoff_s=5.0, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.failed()
    assert breaker.closed and breaker.allow()
    breaker.failed()  # the third consecutive failure opens it
    assert not breaker.closed and not breaker.allow()
    now[0] = 4.9
    assert not breaker.allow()
    now[0] = 5.0
    assert breaker.allow()  # one probe ...
    assert not breaker.allow()  # ... at a time
    breaker.failed()  # a failed probe: open for another back-off
    now[0] = 9.0
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.closed and breaker.allow() and breaker.allow()


def test_encoding_round_trips_floats_exactly() -> None:
    value = CachedScore((0.1 + 0.2, -3.000000000000001e-7), 812, cut=True)
    assert CachedScore.decode(value.encode()) == value


def test_make_cache() -> None:
    assert isinstance(make_cache("memory"), MemoryCache)
    assert isinstance(make_cache("none"), NoCache)
    with pytest.raises(ValueError, match="unknown cache"):
        make_cache("memcached://x")


def test_redis_cache_round_trip_and_ttl(redis_url: str) -> None:
    async def main() -> None:
        cache = make_cache(redis_url, ttl_s=60)
        assert isinstance(cache, RedisCache)
        assert await cache.ping()
        await cache.set_many([("rerankd:test:a", CachedScore((0.25, 0.5), 9, cut=True))])
        await cache.flush()  # writes are write-behind
        got = await cache.get_many(["rerankd:test:a", "rerankd:test:missing"])
        assert got == [CachedScore((0.25, 0.5), 9, cut=True), None]
        assert 0 < await cache._client.ttl("rerankd:test:a") <= 60
        await cache.close()

    asyncio.run(main())


def test_unreachable_redis_is_a_miss_not_an_error() -> None:
    async def main() -> None:
        cache = RedisCache("redis://127.0.0.1:1/0")
        assert not await cache.ping()
        for _ in range(5):
            assert await cache.get_many(["k"]) == [None]
        assert cache.stats.errors["read"] == 3 and cache.stats.skipped_reads == 2  # the breaker opened
        assert not cache.stats.available
        await cache.set_many([("k", CachedScore((1.0,), 1))])  # dropped while open, never raised
        assert cache.stats.dropped_writes == 1
        await cache.close()

    asyncio.run(main())
