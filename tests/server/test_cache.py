"""The score cache backends and keys (Redis against a real redis-server), and the cache size /metrics reports."""

from __future__ import annotations

import asyncio

import pytest

from rerankd import Reranker
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
from tests.server.conftest import ServerFactory
from tests.tiny_models import corpus

pytestmark = pytest.mark.timeout(60)
QUERY = "what is the giant panda?"


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


def _entry_size() -> int:
    """The estimated size of one LRU entry of a cross-encoder score: keys have a fixed length, rows one float."""
    return entry_bytes(score_key("0" * 24, "q", "d"), CachedScore((0.5,), 7))


def test_cache_metrics_grow_with_scored_pairs(start_server: ServerFactory, bert: Reranker) -> None:
    server = start_server({"tiny": bert}, cache="memory")
    docs = corpus(seed=51, n=24, min_words=3, max_words=20)
    assert server.metric("rerankd_cache_entries", backend="memory") == 0
    assert server.metric("rerankd_cache_bytes", backend="memory") == 0
    seen = []
    with server.client() as client:
        for body in ({"query": QUERY, "documents": docs[:12]}, {"query": QUERY, "documents": docs}):
            assert client.post("/v1/rerank", json=body).status_code == 200
            seen.append((server.metric("rerankd_cache_entries", backend="memory"),
                         server.metric("rerankd_cache_bytes", backend="memory")))  # fmt: skip
    assert seen == [(12, 12 * _entry_size()), (24, 24 * _entry_size())]  # the second request added 12 new pairs


def test_cache_metrics_respect_the_byte_bound(start_server: ServerFactory, bert: Reranker) -> None:
    bound = 1 << 16  # the smallest --cache-max-bytes: ~150 entries, far below --cache-size
    server = start_server({"tiny": bert}, cache="memory", cache_max_bytes=bound, cache_size=100_000)
    docs = corpus(seed=52, n=400, min_words=3, max_words=12)
    with server.client() as client:
        for start in range(0, 400, 100):
            assert client.post("/v1/rerank", json={"query": QUERY, "documents": docs[start : start + 100]}).is_success
            size = server.metric("rerankd_cache_bytes", backend="memory")
            assert 0 < size <= bound
    entries = server.metric("rerankd_cache_entries", backend="memory")
    assert entries == bound // _entry_size() < 400  # as many as fit, the oldest evicted
    assert server.metric("rerankd_cache_bytes", backend="memory") == entries * _entry_size()
