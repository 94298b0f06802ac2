"""The ``LoginThrottle`` on Redis, shared by every replica.

Each key is a Redis hash ``<prefix><key>`` with fields ``failures``, ``last`` and
``until`` (milliseconds since the epoch, from the injected clock). An attempt is
checked and counted by one Lua script per key, so concurrent attempts on several
replicas never lose an increment and never get past a lock set by another; the
script applies exactly the rule of :class:`~.throttle_policy.KeyState`. The
logic reads the stored timestamps, never the key's TTL: TTLs (the time until the
key would be forgotten anyway) only collect garbage. Keys are handled one by one,
so the adapter also works on Redis Cluster, where an account key and an address
key live in different slots.

When Redis cannot be reached the throttle fails closed: ``check`` and
``attempt`` raise ``Unavailable`` (reason ``SERVICE_UNAVAILABLE``) and
sign-in is refused until Redis is back, while ``record_success`` only logs (a
counter that was not cleared expires with its window). See ``docs/security.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cortex_core import errors
from cortex_core.adapters.security.throttle_policy import (
    KeyState,
    ThrottlePolicies,
    ThrottlePolicy,
    bounded_key,
    is_account_key,
    is_address_key,
    throttled,
)
from cortex_core.ports import Clock

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "cortex:throttle:"
UNAVAILABLE_MESSAGE = "sign-in is temporarily unavailable; retry later"

# KEYS[1]: the key. ARGV: now, free failures, base delay, max delay, window (ms).
# Returns the wait (ms) while the key is locked, counting nothing; otherwise counts
# the attempt as KeyState.after_failure does and returns 0. PEXPIRE makes Redis
# drop the key once forgotten.
_ATTEMPT = """
local now = tonumber(ARGV[1])
local free = tonumber(ARGV[2])
local base = tonumber(ARGV[3])
local max_delay = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local state = redis.call('HMGET', KEYS[1], 'failures', 'last', 'until')
local failures = 0
local locked_until = now
if state[1] and state[2] and state[3] then
  local last = tonumber(state[2])
  local previous_until = tonumber(state[3])
  if now - math.max(last, previous_until) < window then
    failures = tonumber(state[1])
    locked_until = previous_until
    if previous_until > now then
      return previous_until - now
    end
  end
end
failures = failures + 1
local delay = 0
if failures > free then
  delay = math.min(base * 2 ^ math.min(failures - free - 1, 62), max_delay)
end
locked_until = math.floor(math.max(locked_until, now + delay))
redis.call('HSET', KEYS[1], 'failures', failures, 'last', now, 'until', locked_until)
redis.call('PEXPIRE', KEYS[1], math.max(1, locked_until + window - now))
return 0
"""

# KEYS[1]: the key. Gives one counted attempt back (never below zero).
_REFUND = """
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures'))
if failures and failures > 0 then
  redis.call('HSET', KEYS[1], 'failures', failures - 1)
end
return 0
"""


class RedisLoginThrottle:
    """The ``LoginThrottle`` port on Redis (see :mod:`.throttle_policy` for the rule).

    ``redis`` is a ``redis.asyncio.Redis`` client built by bootstrap (with socket
    timeouts, so an unreachable server fails fast); this class never closes it.
    Raises ``ResourceExhausted`` (reason ``LOGIN_THROTTLED`` or
    ``RATE_LIMITED``) from ``check`` and ``attempt``, and ``Unavailable``
    (reason ``SERVICE_UNAVAILABLE``) when Redis fails.
    """

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        policy: ThrottlePolicy | None = None,
        *,
        policies: ThrottlePolicies | None = None,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._policies = policies or (
            ThrottlePolicies.same(policy) if policy else ThrottlePolicies()
        )
        self._prefix = prefix
        self._attempt = redis.register_script(_ATTEMPT)
        self._refund = redis.register_script(_REFUND)

    @staticmethod
    def _policy_args(policy: ThrottlePolicy) -> tuple[int, int, int, int]:
        return (
            policy.free_failures,
            round(policy.base_delay * 1000),
            round(policy.max_delay * 1000),
            round(policy.window * 1000),
        )

    async def check(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        now_ms = self._now_ms()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(self._redis_key(key), "failures", "last", "until")
                rows = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable("check", exc) from None
        now = now_ms / 1000
        wait = max(
            (
                self._state(row).wait(now, self._policies.for_key(key))
                for key, row in zip(keys, rows, strict=True)
            ),
            default=0.0,
        )
        if wait > 0:
            raise throttled(wait, keys)

    async def attempt(self, keys: Sequence[str]) -> None:
        """Refuse while any key waits (read first, so a locked address does not count
        against the account); then check and count each key atomically in Redis."""
        await self.check(keys)
        now_ms = self._now_ms()
        waits = []
        try:
            for key in keys:
                args = [now_ms, *self._policy_args(self._policies.for_key(key))]
                waits.append(int(await self._attempt(keys=[self._redis_key(key)], args=args)))
        except (RedisError, OSError) as exc:
            raise self._unavailable("attempt", exc) from None
        if max(waits, default=0) > 0:
            raise throttled(max(waits) / 1000, keys)

    async def record_success(self, keys: Sequence[str]) -> None:
        try:
            for key in keys:
                if is_account_key(key):
                    await self._redis.delete(self._redis_key(key))
                elif is_address_key(key):
                    await self._refund(keys=[self._redis_key(key)])
        except (RedisError, OSError) as exc:
            logger.warning("login throttle: could not clear a key after sign-in: %r", exc)

    def _redis_key(self, key: str) -> str:
        return self._prefix + bounded_key(key)

    def _now_ms(self) -> int:
        return round(self._clock.now().timestamp() * 1000)

    @staticmethod
    def _state(row: Sequence[bytes | str | None]) -> KeyState:
        failures, last, until = row
        if failures is None or last is None or until is None:
            return KeyState(0, float("-inf"), float("-inf"))
        return KeyState(int(failures), int(last) / 1000, int(until) / 1000)

    @staticmethod
    def _unavailable(operation: str, exc: Exception) -> errors.Unavailable:
        logger.warning("login throttle: Redis failed during %s: %r", operation, exc)
        return errors.Unavailable(UNAVAILABLE_MESSAGE, reason="SERVICE_UNAVAILABLE")
