"""In-process :class:`~cortex_core.ports.Cache` and :class:`~cortex_core.ports.WorkingMemory`.

Both are bounded (least recently used entries go first) and expire entries on
read, by a monotonic clock that tests may replace. They are the embedded
defaults, the test doubles, and what the Redis adapters fall back to while
Redis is unreachable. Not shared between processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

Monotonic = Callable[[], float]


class InMemoryCache:
    """A bounded LRU of ``bytes`` with a TTL per entry."""

    def __init__(self, max_entries: int = 10_000, *, monotonic: Monotonic = time.monotonic) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._max = max_entries
        self._now = monotonic
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._now():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._now() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def delete_prefix(self, prefix: str) -> None:
        # O(entries); the cache is bounded, and prefix deletes follow writes only.
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    async def close(self) -> None:
        self.clear()


class InMemoryWorkingMemory:
    """Per-conversation string maps that expire ``ttl`` seconds after their last write;
    at most ``max_conversations`` are kept (least recently used go first)."""

    def __init__(
        self, max_conversations: int = 10_000, *, monotonic: Monotonic = time.monotonic
    ) -> None:
        if max_conversations <= 0:
            raise ValueError("max_conversations must be positive")
        self._max = max_conversations
        self._now = monotonic
        self._maps: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def _live(self, conversation_id: str) -> dict[str, str] | None:
        entry = self._maps.get(conversation_id)
        if entry is None:
            return None
        if entry[0] <= self._now():
            del self._maps[conversation_id]
            return None
        self._maps.move_to_end(conversation_id)
        return entry[1]

    async def get(self, conversation_id: str, key: str) -> str | None:
        values = self._live(conversation_id)
        return values.get(key) if values else None

    async def items(self, conversation_id: str) -> dict[str, str]:
        return dict(self._live(conversation_id) or {})

    async def set(self, conversation_id: str, key: str, value: str, ttl: float) -> None:
        values = self._live(conversation_id) or {}
        values[key] = value
        self._maps[conversation_id] = (self._now() + ttl, values)
        self._maps.move_to_end(conversation_id)
        while len(self._maps) > self._max:
            self._maps.popitem(last=False)

    async def clear(self, conversation_id: str) -> None:
        self._maps.pop(conversation_id, None)

    def clear_all(self) -> None:
        self._maps.clear()

    async def close(self) -> None:
        self.clear_all()
