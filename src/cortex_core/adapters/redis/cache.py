"""Redis :class:`~cortex_core.ports.Cache` that survives Redis going away.

While Redis answers, every call goes to Redis (keys under ``cortex:cache:``).
When a call fails (refused, dropped, timed out), the adapter logs one warning,
empties and then uses an in-process :class:`~cortex_core.adapters.cache.InMemoryCache`,
and leaves Redis alone: its :class:`~cortex_core.adapters.circuit.CircuitBreaker`
opens at the first failure for 1 s, doubling up to 30 s while probes fail. One call
after that probes Redis; on success it logs one recovery line and uses Redis again.
The client is the process's shared one (:mod:`.client`); the cache never
closes it.

Invalidations made during the outage (``delete``/``delete_prefix``) are
remembered (up to 1000) and replayed on Redis before it is used again, so a
value invalidated while Redis was down is not served from it afterwards; if more
were made, the whole ``cortex:cache:`` namespace is dropped instead. Writes made
during the outage stay in the process. Other replicas' outages are theirs:
entries they could not invalidate live until their TTL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import redis.asyncio as redis
from redis.exceptions import RedisError

from cortex_core.adapters.cache import InMemoryCache, Monotonic
from cortex_core.adapters.circuit import BreakerPolicy, BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

MAX_PENDING = 1000
T = TypeVar("T")
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def glob_escape(text: str) -> str:
    return text.translate(_GLOB_SPECIALS)


async def unlink_matching(client: redis.Redis, prefix: str) -> int:
    """Delete every key starting with ``prefix``, in batches; return how many."""
    removed = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=glob_escape(prefix) + "*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            removed += await client.unlink(*batch)
            batch.clear()
    if batch:
        removed += await client.unlink(*batch)
    return removed


class MissedWrites(Generic[T]):
    """Invalidations made while Redis was down, to replay when it is back.

    Bounded: past ``MAX_PENDING`` only the fact that some were missed is kept
    (``overflowed``), and the owner drops its whole namespace instead.
    """

    def __init__(self) -> None:
        self.items: list[T] = []
        self.overflowed = False

    def add(self, item: T) -> None:
        if len(self.items) >= MAX_PENDING:
            self.overflowed = True
            self.items.clear()
        if not self.overflowed:
            self.items.append(item)

    def reset(self) -> None:
        self.items.clear()
        self.overflowed = False


#: Redis is asked again 1 s after it failed, then 2 s, 4 s … up to 30 s.
REDIS_BREAKER = BreakerPolicy(failure_threshold=1, reset_after=1.0, max_reset_after=30.0)


def redis_breaker(what: str, monotonic: Monotonic = time.monotonic) -> CircuitBreaker:
    """The breaker in front of Redis for ``what`` (e.g. "cache"), named in its logs."""
    return CircuitBreaker(what, REDIS_BREAKER, monotonic)


async def attempt(
    breaker: CircuitBreaker,
    operation: Callable[[], Awaitable[Any]],
    *,
    replay: Callable[[], Awaitable[None]],
    on_loss: Callable[[], object],
) -> tuple[bool, Any]:
    """(True, result) from Redis, or (False, None) when the fallback must answer.

    After an outage, ``replay`` runs (on Redis) before the probe's operation;
    ``on_loss`` runs once when Redis is lost (to empty a stale fallback). One
    warning is logged when Redis is lost and one when it is back.
    """
    if not breaker.try_acquire():
        return False, None
    was_up = breaker.state is BreakerState.CLOSED
    try:
        if not was_up:
            await replay()
        result = await operation()
    except (RedisError, OSError) as error:
        if breaker.record_failure() and was_up:
            log.warning(
                "redis is unreachable for the %s (%s); serving from the in-process fallback",
                breaker.name,
                type(error).__name__,
            )
            on_loss()
        return False, None
    except BaseException:
        breaker.release()
        raise
    if breaker.record_success():
        log.warning("redis is reachable again for the %s; using it again", breaker.name)
    return True, result


class RedisCache:
    """See the module docstring. ``fallback`` is the in-process cache used while down."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = "cortex:cache:",
        fallback: InMemoryCache | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._client = client
        self._ns = namespace
        self._local = fallback or InMemoryCache()
        self._breaker = breaker or redis_breaker("cache")
        self._missed: MissedWrites[tuple[bool, str]] = MissedWrites()  # (is_prefix, key)

    @property
    def using_redis(self) -> bool:
        return self._breaker.state is BreakerState.CLOSED

    async def get(self, key: str) -> bytes | None:
        ok, value = await self._try(lambda: self._client.get(self._ns + key))
        if ok:
            return bytes(value) if value is not None else None
        return await self._local.get(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            await self.delete(key)
            return
        ms = max(1, int(ttl * 1000))
        ok, _ = await self._try(lambda: self._client.set(self._ns + key, value, px=ms))
        if not ok:
            await self._local.set(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self._local.delete(key)
        ok, _ = await self._try(lambda: self._client.unlink(self._ns + key))
        if not ok:
            self._missed.add((False, key))

    async def delete_prefix(self, prefix: str) -> None:
        await self._local.delete_prefix(prefix)
        ok, _ = await self._try(lambda: unlink_matching(self._client, self._ns + prefix))
        if not ok:
            self._missed.add((True, prefix))

    async def close(self) -> None:
        """Empty the fallback; the shared client is closed by whoever built it."""
        await self._local.close()

    async def _try(self, operation: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        return await attempt(
            self._breaker, operation, replay=self._replay, on_loss=self._local.clear
        )

    async def _replay(self) -> None:
        """Apply the invalidations missed while Redis was down (it raises if still down)."""
        if self._missed.overflowed:
            await unlink_matching(self._client, self._ns)
        else:
            for is_prefix, key in self._missed.items:
                if is_prefix:
                    await unlink_matching(self._client, self._ns + key)
                else:
                    await self._client.unlink(self._ns + key)
        self._missed.reset()
