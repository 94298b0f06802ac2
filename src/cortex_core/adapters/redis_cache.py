"""Redis :class:`~cortex_core.ports.Cache` that survives Redis going away.

While Redis answers, every call goes to Redis (keys under ``cortex:cache:``).
When a call fails (refused, dropped, timed out), the adapter logs one warning,
empties and then uses an in-process :class:`~cortex_core.adapters.cache.InMemoryCache`,
and leaves Redis alone for a backoff (1 s, doubling up to 30 s). The first call
after the backoff probes Redis; on success it logs one recovery line and uses
Redis again.

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
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from cortex_core.adapters.cache import InMemoryCache, Monotonic

log = logging.getLogger(__name__)

MAX_PENDING = 1000
T = TypeVar("T")
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def fail_fast_client(url: str) -> redis.Redis:
    """A client whose calls fail within about a second when Redis is unreachable."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


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


class Circuit:
    """Whether to try Redis now; logs once per loss and once per recovery."""

    def __init__(
        self,
        what: str,
        *,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._what = what
        self._initial = backoff
        self._max = max_backoff
        self._backoff = backoff
        self._now = monotonic
        self.down = False
        self._retry_at = 0.0

    def should_try(self) -> bool:
        return not self.down or self._now() >= self._retry_at

    def failed(self, error: BaseException) -> bool:
        """Record a failure; True when Redis was up until now."""
        lost = not self.down
        if lost:
            self._backoff = self._initial
            log.warning(
                "redis is unreachable for the %s (%s); serving from the in-process fallback",
                self._what,
                type(error).__name__,
            )
        else:
            self._backoff = min(self._backoff * 2, self._max)
        self.down = True
        self._retry_at = self._now() + self._backoff
        return lost

    def succeeded(self) -> bool:
        """Record a success; True when Redis was down until now."""
        if not self.down:
            return False
        self.down = False
        log.warning("redis is reachable again for the %s; using it again", self._what)
        return True

    async def attempt(
        self,
        operation: Callable[[], Awaitable[Any]],
        *,
        replay: Callable[[], Awaitable[None]],
        on_loss: Callable[[], object],
    ) -> tuple[bool, Any]:
        """(True, result) from Redis, or (False, None) when the fallback must answer.

        After an outage, ``replay`` runs (on Redis) before the first operation;
        ``on_loss`` runs once when Redis is lost (to empty a stale fallback).
        """
        if not self.should_try():
            return False, None
        try:
            if self.down:
                await replay()
            result = await operation()
        except (RedisError, OSError) as error:
            if self.failed(error):
                on_loss()
            return False, None
        self.succeeded()
        return True, result


class RedisCache:
    """See the module docstring. ``fallback`` is the in-process cache used while down."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        namespace: str = "cortex:cache:",
        fallback: InMemoryCache | None = None,
        circuit: Circuit | None = None,
    ) -> None:
        self._client = client
        self._ns = namespace
        self._local = fallback or InMemoryCache()
        self._circuit = circuit or Circuit("cache")
        self._missed: MissedWrites[tuple[bool, str]] = MissedWrites()  # (is_prefix, key)

    @classmethod
    def from_url(cls, url: str) -> RedisCache:
        return cls(fail_fast_client(url))

    @property
    def using_redis(self) -> bool:
        return not self._circuit.down

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
        await self._client.aclose()

    async def _try(self, operation: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        return await self._circuit.attempt(
            operation, replay=self._replay, on_loss=self._local.clear
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
