"""The in-process ``LoginThrottle``: the embedded default and the reference semantics.

State lives in an ``OrderedDict`` used as an LRU: each counted attempt moves its
key to the end; forgotten keys are pruned from the front as new attempts arrive,
and when ``max_keys`` is reached the least recently tried key is evicted. Memory is
therefore bounded (about 250 bytes per key, 100k keys by default) even under a
flood of failures from many addresses. The cost of the bound: an attacker who can
produce ``max_keys`` distinct failing keys between two of a victim key's
failures can flush it; the per-address key makes that expensive.

Every method runs without awaiting, so on one event loop each is atomic: of
parallel ``attempt`` calls, those after the one that locks a key are refused.
State is per process: with several replicas use :class:`RedisLoginThrottle`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from cortex_core.adapters.security.throttle_policy import (
    NO_FAILURES,
    KeyState,
    ThrottlePolicies,
    ThrottlePolicy,
    bounded_key,
    is_account_key,
    is_address_key,
    throttled,
)
from cortex_core.ports import Clock

DEFAULT_MAX_KEYS = 100_000
#: How many of the oldest entries one failure may inspect for pruning.
_PRUNE_BATCH = 4


class InMemoryLoginThrottle:
    """The ``LoginThrottle`` port in process memory (see :mod:`.throttle_policy`).

    ``check`` raises ``ResourceExhausted`` (reason ``LOGIN_THROTTLED`` or
    ``RATE_LIMITED``) with the longest remaining wait among ``keys``;
    ``attempt`` does the same or, when no key waits, counts one attempt on every
    key; ``record_success`` forgets the ``account:`` keys and gives the attempt
    back to the ``address:`` keys. ``policy`` (one policy for every kind of key)
    or ``policies`` choose the numbers.
    """

    def __init__(
        self,
        clock: Clock,
        policy: ThrottlePolicy | None = None,
        *,
        policies: ThrottlePolicies | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._policies = policies or (
            ThrottlePolicies.same(policy) if policy else ThrottlePolicies()
        )
        self._max_keys = max_keys
        self._states: OrderedDict[str, KeyState] = OrderedDict()

    def __len__(self) -> int:
        """How many keys are remembered (forgotten ones may linger until pruned)."""
        return len(self._states)

    async def check(self, keys: Sequence[str]) -> None:
        self._check(keys, self._now())

    async def attempt(self, keys: Sequence[str]) -> None:
        now = self._now()
        self._check(keys, now)
        for key in map(bounded_key, keys):
            state = self._states.pop(key, NO_FAILURES)
            self._states[key] = state.after_failure(now, self._policies.for_key(key))
        self._prune(now)

    async def record_success(self, keys: Sequence[str]) -> None:
        for key in map(bounded_key, keys):
            if is_account_key(key):
                self._states.pop(key, None)
            elif is_address_key(key) and key in self._states:
                self._states[key] = self._states[key].after_refund()

    def _check(self, keys: Sequence[str], now: float) -> None:
        wait = max(
            (
                self._states.get(bounded_key(k), NO_FAILURES).wait(now, self._policies.for_key(k))
                for k in keys
            ),
            default=0.0,
        )
        if wait > 0:
            raise throttled(wait, keys)

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _prune(self, now: float) -> None:
        for _ in range(_PRUNE_BATCH):
            oldest = next(iter(self._states.items()), None)
            if oldest is None or not oldest[1].forgotten(now, self._policies.for_key(oldest[0])):
                break
            del self._states[oldest[0]]
        while len(self._states) > self._max_keys:
            self._states.popitem(last=False)
