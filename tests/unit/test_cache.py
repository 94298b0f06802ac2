"""Caches: bounded, expiring, and still answering when Redis goes away.

The Redis tests read ``CORTEX_TEST_REDIS_URL`` (skipped locally when unset, failing
when ``CI=true``). The shared server is only used under a unique namespace; the
outage test starts and kills a redis-server of its own on a free port.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from support.databases import require_env

from cortex_core.adapters.cache import InMemoryCache
from cortex_core.adapters.redis.cache import RedisCache, redis_breaker
from cortex_core.adapters.redis.client import redis_client


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_entry_expires_after_its_ttl() -> None:
    clock = FakeMonotonic()
    cache = InMemoryCache(monotonic=clock)
    await cache.set("k", b"v", ttl=5)
    clock.now += 4.9
    assert await cache.get("k") == b"v"
    clock.now += 0.2
    assert await cache.get("k") is None


async def test_the_least_recently_used_entry_goes_first_when_full() -> None:
    cache = InMemoryCache(max_entries=2)
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    assert await cache.get("a") == b"1"  # "b" is now the least recently used
    await cache.set("c", b"3", 60)
    assert [await cache.get(k) for k in ("a", "b", "c")] == [b"1", None, b"3"]


async def test_delete_prefix_drops_only_matching_keys() -> None:
    cache = InMemoryCache()
    for key in ("ctx:w1:c1:a", "ctx:w1:c2:a", "ctx:w2:c1:a"):
        await cache.set(key, b"x", 60)
    await cache.delete_prefix("ctx:w1:")
    assert [await cache.get(k) for k in ("ctx:w1:c1:a", "ctx:w1:c2:a", "ctx:w2:c1:a")] == [
        None,
        None,
        b"x",
    ]


# --- Redis -----------------------------------------------------------------------


@pytest.fixture
async def shared_redis_cache() -> AsyncIterator[RedisCache]:
    url = require_env("CORTEX_TEST_REDIS_URL")
    client = redis_client(url, timeout=0.5)
    cache = RedisCache(client, namespace=f"test:{uuid.uuid4().hex}:")
    try:
        yield cache
    finally:
        await cache.delete_prefix("")
        await cache.close()
        await client.aclose()


async def test_redis_cache_stores_expires_and_deletes_by_prefix(
    shared_redis_cache: RedisCache,
) -> None:
    cache = shared_redis_cache
    await cache.set("ctx:w1:c1:8192", b"window", ttl=0.2)
    await cache.set("ctx:w1:c2:8192", b"other", ttl=60)
    await cache.set("ctx:w[1]:c*:x", b"globby", ttl=60)
    assert await cache.get("ctx:w1:c1:8192") == b"window"
    await asyncio.sleep(0.3)
    assert await cache.get("ctx:w1:c1:8192") is None
    await cache.delete_prefix("ctx:w[1]:")
    assert await cache.get("ctx:w1:c2:8192") == b"other"  # glob characters are literal
    await cache.delete_prefix("ctx:w1:")
    assert await cache.get("ctx:w1:c2:8192") is None
    assert cache.using_redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of this test's own, which it may kill and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.binary = binary
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]

    def start(self) -> None:
        self.process = subprocess.Popen(
            [*self._command(), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def pause(self, paused: bool) -> None:
        """Freeze (SIGSTOP) or thaw the server: connections hang, then time out."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    require_env("CORTEX_TEST_REDIS_URL")
    server = OwnRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_the_cache_answers_while_redis_is_gone_and_uses_it_again_when_back(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeMonotonic()
    client = redis_client(own_redis.url, timeout=0.5)
    cache = RedisCache(client, breaker=redis_breaker("cache", monotonic=clock))
    try:
        await cache.set("ctx:w1:c1:a", b"before", 60)
        assert await cache.get("ctx:w1:c1:a") == b"before"
        assert cache.using_redis

        own_redis.kill()
        with caplog.at_level(logging.WARNING, logger="cortex_core.adapters.redis.cache"):
            assert await cache.get("ctx:w1:c1:a") is None  # a miss, not an error
            await cache.set("ctx:w1:c1:a", b"during", 60)
            assert await cache.get("ctx:w1:c1:a") == b"during"  # from the process
            await cache.delete_prefix("ctx:w1:")  # remembered for Redis
            assert await cache.get("ctx:w1:c1:a") is None
            clock.now += 1.5
            assert await cache.get("ctx:w1:c1:a") is None  # probe fails: still down
        lost = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(lost) == 1
        assert not cache.using_redis

        own_redis.start()
        clock.now += 5  # past the (doubled) backoff
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cortex_core.adapters.redis.cache"):
            await cache.set("ctx:w2:c1:a", b"after", 60)
            assert cache.using_redis
            assert await cache.get("ctx:w2:c1:a") == b"after"
        assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()]
        direct = redis_client(own_redis.url, timeout=0.5)
        try:
            assert await direct.get("cortex:cache:ctx:w2:c1:a") == b"after"  # really in Redis
        finally:
            await direct.aclose()
    finally:
        await cache.close()
        await client.aclose()


async def test_an_invalidation_missed_during_an_outage_is_applied_when_redis_returns(
    own_redis: OwnRedis,
) -> None:
    clock = FakeMonotonic()
    client = redis_client(own_redis.url, timeout=0.5)
    cache = RedisCache(client, breaker=redis_breaker("cache", monotonic=clock))
    try:
        await cache.set("ctx:w1:c1:a", b"old window", 600)
        own_redis.pause(True)
        await cache.delete_prefix("ctx:w1:")
        assert not cache.using_redis
        own_redis.pause(False)
        clock.now += 2
        assert await cache.get("ctx:w1:c1:a") is None  # not the stale window from Redis
        assert cache.using_redis
    finally:
        await cache.close()
        await client.aclose()
