"""The in-process ``LoginThrottle``: the embedded default and the reference semantics.

State lives in an ``OrderedDict`` used as an LRU: each counted attempt moves its
key to the end; forgotten keys are pruned from the front as new attempts arrive,
and when ``max_keys`` is reached the least recently tried key is evicted. Memory is
therefore bounded (about 250 bytes per key, 100k keys by default) even under a
flood of failures from many addresses. The cost of the bound: an attacker who can
produce ``max_keys`` distinct failing keys between two of a victim key's
failures can flush it; the per-address key makes that expensive.

Each step runs without awaiting, so on one event loop each is atomic: parallel
``reserve`` calls beyond a key's allowance wait for earlier ones to settle.
State is per process: with several replicas use :class:`RedisLoginThrottle`.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Sequence

from cortex_core.adapters.security.throttle_policy import (
    NO_FAILURES,
    RESERVATION_LEASE,
    KeyState,
    ThrottlePolicies,
    ThrottlePolicy,
    bounded_key,
    is_account_key,
    is_register_key,
    throttled,
    wait_for_turn,
)
from cortex_core.ports import AttemptOutcome, Clock

DEFAULT_MAX_KEYS = 100_000
#: How many of the oldest entries one failure may inspect for pruning.
_PRUNE_BATCH = 4


class InMemoryLoginThrottle:
    """The ``LoginThrottle`` port in process memory (see :mod:`.throttle_policy`).

    ``check`` raises ``ResourceExhausted`` (reason ``LOGIN_THROTTLED`` or
    ``RATE_LIMITED``) with the longest remaining wait among ``keys``;
    ``reserve`` and ``settle`` bracket one attempt (see the module's rule).
    ``policy`` (one policy for every kind of key) or ``policies`` choose the
    numbers. Reservations are held in a separate dict that only ever has keys
    with attempts in flight.
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
        # key -> reservation token -> when it lapses; only keys with attempts in flight.
        self._pending: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        """How many keys are remembered (forgotten ones may linger until pruned)."""
        return len(self._states)

    async def check(self, keys: Sequence[str]) -> None:
        self._check(keys, self._now())

    async def reserve(self, keys: Sequence[str]) -> str:
        token = secrets.token_hex(8)
        keys = [bounded_key(k) for k in keys]

        async def try_reserve() -> bool:
            now = self._now()
            self._check(keys, now)
            if any(self._full(key, now) for key in keys):
                return False
            for key in keys:
                if is_register_key(key):
                    self._count(key, now)
                else:
                    self._pending.setdefault(key, {})[token] = now + RESERVATION_LEASE
            return True

        await wait_for_turn(try_reserve, keys)
        return token

    async def settle(self, keys: Sequence[str], token: str, outcome: AttemptOutcome) -> None:
        now = self._now()
        for key in map(bounded_key, keys):
            reservations = self._pending.get(key)
            if reservations is not None:
                reservations.pop(token, None)
                if not reservations:
                    del self._pending[key]
            if outcome is AttemptOutcome.FAILED and not is_register_key(key):
                self._count(key, now)
            elif outcome is AttemptOutcome.SUCCEEDED and is_account_key(key):
                self._states.pop(key, None)
        self._prune(now)

    def _full(self, key: str, now: float) -> bool:
        """True while reservations are in flight and, with the failures so far, exceed
        the free attempts (past them, one attempt at a time, each gated by its lock)."""
        policy = self._policies.for_key(key)
        reservations = self._pending.get(key, {})
        for token in [t for t, until in reservations.items() if until <= now]:
            del reservations[token]  # lapsed: never settled
        failures = self._states.get(key, NO_FAILURES).live_failures(now, policy)
        return bool(reservations) and failures + len(reservations) > policy.free_failures

    def _count(self, key: str, now: float) -> None:
        state = self._states.pop(key, NO_FAILURES)
        self._states[key] = state.after_failure(now, self._policies.for_key(key))

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
