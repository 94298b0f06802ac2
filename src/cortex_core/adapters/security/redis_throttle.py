"""The ``LoginThrottle`` on Redis, shared by every replica.

Each key is a Redis hash ``<prefix><key>`` with fields ``failures``, ``last`` and
``until`` (milliseconds since the epoch, from the injected clock). A failure is
counted by one Lua script per key, so concurrent failures on several replicas
never lose an increment; the script applies exactly the rule of
:class:`~.throttle_policy.KeyState`. The logic reads the stored timestamps, never
the key's TTL: TTLs (the time until the key would be forgotten anyway) only
collect garbage. Keys are handled one by one, so the adapter also works on Redis
Cluster, where an account key and an address key live in different slots.

When Redis cannot be reached the throttle fails closed: ``check`` and
``record_failure`` raise ``Unavailable`` (reason ``SERVICE_UNAVAILABLE``) and
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
    ThrottlePolicy,
    bounded_key,
    is_account_key,
    throttled,
)
from cortex_core.ports import Clock

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "cortex:throttle:"
UNAVAILABLE_MESSAGE = "sign-in is temporarily unavailable; retry later"

# KEYS[1]: the key. ARGV: now, free failures, base delay, max delay, window (ms).
# Mirrors KeyState.after_failure; PEXPIRE makes Redis drop the key once forgotten.
_RECORD_FAILURE = """
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
return failures
"""


class RedisLoginThrottle:
    """The ``LoginThrottle`` port on Redis (see :mod:`.throttle_policy` for the rule).

    ``redis`` is a ``redis.asyncio.Redis`` client built by bootstrap (with socket
    timeouts, so an unreachable server fails fast); this class never closes it.
    Raises ``ResourceExhausted`` (reason ``LOGIN_THROTTLED``) from ``check`` and
    ``Unavailable`` (reason ``SERVICE_UNAVAILABLE``) when Redis fails.
    """

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        policy: ThrottlePolicy | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._policy = policy or ThrottlePolicy()
        self._prefix = prefix
        self._record_failure = redis.register_script(_RECORD_FAILURE)
        policy_ms = self._policy
        self._policy_args = (
            policy_ms.free_failures,
            round(policy_ms.base_delay * 1000),
            round(policy_ms.max_delay * 1000),
            round(policy_ms.window * 1000),
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
        wait = max((self._state(row).wait(now, self._policy) for row in rows), default=0.0)
        if wait > 0:
            raise throttled(wait)

    async def record_failure(self, keys: Sequence[str]) -> None:
        now_ms = self._now_ms()
        try:
            for key in keys:
                await self._record_failure(
                    keys=[self._redis_key(key)], args=[now_ms, *self._policy_args]
                )
        except (RedisError, OSError) as exc:
            raise self._unavailable("record_failure", exc) from None

    async def record_success(self, keys: Sequence[str]) -> None:
        account_keys = [self._redis_key(key) for key in keys if is_account_key(key)]
        try:
            for key in account_keys:
                await self._redis.delete(key)
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
