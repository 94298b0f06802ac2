"""Redis :class:`~cortex_core.ports.WorkingMemory`: one hash per conversation, with
Redis's native expiry (``PEXPIRE`` on every write).

Like :class:`~cortex_core.adapters.redis_cache.RedisCache`, it falls back to an
in-process store while Redis is unreachable (one log line on loss, one on
recovery, retried after a backoff). ``clear`` calls made during an outage are
replayed on recovery (up to 1000; beyond that every working memory in Redis is
dropped). Entries written during the outage stay in this process only, and
after recovery reads come from Redis again: working memory is scratch state,
and losing it only costs a rebuild.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as redis

from cortex_core.adapters.cache import InMemoryWorkingMemory
from cortex_core.adapters.redis_cache import (
    Circuit,
    MissedWrites,
    fail_fast_client,
    unlink_matching,
)

_NAMESPACE = "cortex:wm:"


class RedisWorkingMemory:
    def __init__(
        self,
        client: redis.Redis,
        *,
        fallback: InMemoryWorkingMemory | None = None,
        circuit: Circuit | None = None,
    ) -> None:
        self._client = client
        self._local = fallback or InMemoryWorkingMemory()
        self._circuit = circuit or Circuit("working memory")
        self._missed: MissedWrites[str] = MissedWrites()  # conversations cleared while down

    @classmethod
    def from_url(cls, url: str) -> RedisWorkingMemory:
        return cls(fail_fast_client(url))

    @property
    def using_redis(self) -> bool:
        return not self._circuit.down

    async def get(self, conversation_id: str, key: str) -> str | None:
        ok, value = await self._try(lambda: self._client.hget(_NAMESPACE + conversation_id, key))
        if ok:
            return value.decode() if value is not None else None
        return await self._local.get(conversation_id, key)

    async def items(self, conversation_id: str) -> dict[str, str]:
        ok, values = await self._try(lambda: self._client.hgetall(_NAMESPACE + conversation_id))
        if ok:
            return {k.decode(): v.decode() for k, v in values.items()}
        return await self._local.items(conversation_id)

    async def set(self, conversation_id: str, key: str, value: str, ttl: float) -> None:
        name = _NAMESPACE + conversation_id

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(name, key, value)
                pipe.pexpire(name, max(1, int(ttl * 1000)))
                await pipe.execute()

        ok, _ = await self._try(write)
        if not ok:
            await self._local.set(conversation_id, key, value, ttl)

    async def clear(self, conversation_id: str) -> None:
        await self._local.clear(conversation_id)
        ok, _ = await self._try(lambda: self._client.unlink(_NAMESPACE + conversation_id))
        if not ok:
            self._missed.add(conversation_id)

    async def close(self) -> None:
        await self._client.aclose()

    async def _try(self, operation: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        return await self._circuit.attempt(
            operation, replay=self._replay, on_loss=self._local.clear_all
        )

    async def _replay(self) -> None:
        if self._missed.overflowed:
            await unlink_matching(self._client, _NAMESPACE)
        else:
            for conversation_id in self._missed.items:
                await self._client.unlink(_NAMESPACE + conversation_id)
        self._missed.reset()
