"""The score cache backends and keys (Redis against a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from rerankd.jobs import ScoreOptions
from rerankd.server.cache import CachedScore, MemoryCache, NoCache, RedisCache, make_cache, score_key, settings_digest

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
        got = await cache.get_many(["rerankd:test:a", "rerankd:test:missing"])
        assert got == [CachedScore((0.25, 0.5), 9, cut=True), None]
        assert 0 < await cache._client.ttl("rerankd:test:a") <= 60
        await cache.close()

    asyncio.run(main())


def test_unreachable_redis_is_a_miss_not_an_error() -> None:
    async def main() -> None:
        cache = RedisCache("redis://127.0.0.1:1/0")
        assert not await cache.ping()
        assert await cache.get_many(["k"]) == [None]
        await cache.set_many([("k", CachedScore((1.0,), 1))])  # logged, not raised
        await cache.close()

    asyncio.run(main())
