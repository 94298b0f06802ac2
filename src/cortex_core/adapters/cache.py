"""In-process :class:`~cortex_core.ports.Cache`: the embedded default, the test
double, and what the Redis cache falls back to while Redis is unreachable.

Bounded and expiring through ``cachetools.TLRUCache`` (the project's one LRU/TTL
helper, see docs/architecture.md): least recently used entries go first when it
is full, and each entry expires ``ttl`` seconds after it was set, by a monotonic
clock that tests may replace. Not shared between processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TLRUCache

Monotonic = Callable[[], float]


def _expiry(_key: str, entry: tuple[float, bytes], now: float) -> float:
    return now + entry[0]


class InMemoryCache:
    """A bounded LRU of ``bytes`` with a TTL per entry."""

    def __init__(self, max_entries: int = 10_000, *, monotonic: Monotonic = time.monotonic) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self._entries: TLRUCache[str, tuple[float, bytes]] = TLRUCache(
            maxsize=max_entries, ttu=_expiry, timer=monotonic
        )

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (ttl, value)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def delete_prefix(self, prefix: str) -> None:
        # O(entries); the cache is bounded, and prefix deletes follow writes only.
        for key in [k for k in self._entries if k.startswith(prefix)]:
            self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    async def close(self) -> None:
        self.clear()
