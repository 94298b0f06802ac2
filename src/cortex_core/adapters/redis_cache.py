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
from typing import Any

import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from cortex_core.adapters.cache import InMemoryCache, Monotonic

log = logging.getLogger(__name__)

MAX_PENDING = 1000
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})


def fail_fast_client(url: str) -> redis.Redis:
    """A client whose calls fail within about a second when Redis is unreachable."""
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )


def glob_escape(text: str) -> str:
    return text.translate(_GLOB_SPECIALS)


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
        self._pending: list[tuple[bool, str]] = []  # (is_prefix, key or prefix)
        self._overflowed = False

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
            self._remember(False, key)

    async def delete_prefix(self, prefix: str) -> None:
        await self._local.delete_prefix(prefix)
        ok, _ = await self._try(lambda: self._unlink_matching(self._ns + prefix))
        if not ok:
            self._remember(True, prefix)

    async def close(self) -> None:
        await self._client.aclose()

    async def _try(self, operation: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """(True, result) from Redis, or (False, None) when the fallback must answer."""
        if not self._circuit.should_try():
            return False, None
        try:
            if self._circuit.down:
                await self._replay()
            result = await operation()
        except (RedisError, OSError) as error:
            if self._circuit.failed(error):
                self._local.clear()
            return False, None
        self._circuit.succeeded()
        return True, result

    def _remember(self, is_prefix: bool, key: str) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._overflowed = True
            self._pending.clear()
        if not self._overflowed:
            self._pending.append((is_prefix, key))

    async def _replay(self) -> None:
        """Apply the invalidations missed while Redis was down (it raises if still down)."""
        if self._overflowed:
            await self._unlink_matching(self._ns)
        else:
            for is_prefix, key in self._pending:
                if is_prefix:
                    await self._unlink_matching(self._ns + key)
                else:
                    await self._client.unlink(self._ns + key)
        self._pending.clear()
        self._overflowed = False

    async def _unlink_matching(self, prefix: str) -> int:
        removed = 0
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=glob_escape(prefix) + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += await self._client.unlink(*batch)
                batch.clear()
        if batch:
            removed += await self._client.unlink(*batch)
        return removed
