"""The in-process ``LoginThrottle``: the embedded default and the reference semantics.

State lives in a ``cachetools.TLRUCache`` (the project's one LRU/TTL helper): a key
is forgotten once a whole window has passed since its last failure or lock-out,
and when ``max_keys`` is reached the least recently used key is evicted. Memory is
therefore bounded (about 250 bytes per key, 100k keys by default) even under a
flood of failures from many addresses. The cost of the bound: an attacker who can
produce ``max_keys`` distinct failing keys between two of a victim key's
failures can flush it; the per-address key makes that expensive.

Every method runs without awaiting, so on one event loop each is atomic. State
is per process: with several replicas use :class:`RedisLoginThrottle`.
"""

from __future__ import annotations

from collections.abc import Sequence

from cachetools import TLRUCache

from cortex_core.adapters.security.throttle_policy import (
    NO_FAILURES,
    KeyState,
    ThrottlePolicy,
    bounded_key,
    is_account_key,
    throttled,
)
from cortex_core.ports import Clock

DEFAULT_MAX_KEYS = 100_000


class InMemoryLoginThrottle:
    """The ``LoginThrottle`` port in process memory (see :mod:`.throttle_policy`).

    ``check`` raises ``ResourceExhausted`` (reason ``LOGIN_THROTTLED``) with the
    longest remaining wait among ``keys``; ``record_failure`` counts one failure
    on every key; ``record_success`` forgets the ``account:`` keys among ``keys``.
    """

    def __init__(
        self,
        clock: Clock,
        policy: ThrottlePolicy | None = None,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._policy = policy or ThrottlePolicy()
        window = self._policy.window
        self._states: TLRUCache[str, KeyState] = TLRUCache(
            maxsize=max_keys,
            ttu=lambda _key, state, _now: max(state.last_failure, state.locked_until) + window,
            timer=self._now,
        )

    def __len__(self) -> int:
        """How many keys are remembered (forgotten ones may linger until pruned)."""
        return len(self._states)

    async def check(self, keys: Sequence[str]) -> None:
        now = self._now()
        wait = max(
            (self._states.get(bounded_key(k), NO_FAILURES).wait(now, self._policy) for k in keys),
            default=0.0,
        )
        if wait > 0:
            raise throttled(wait)

    async def record_failure(self, keys: Sequence[str]) -> None:
        now = self._now()
        for key in map(bounded_key, keys):
            state = self._states.pop(key, NO_FAILURES)
            self._states[key] = state.after_failure(now, self._policy)

    async def record_success(self, keys: Sequence[str]) -> None:
        for key in keys:
            if is_account_key(key):
                self._states.pop(bounded_key(key), None)

    def _now(self) -> float:
        return self._clock.now().timestamp()
