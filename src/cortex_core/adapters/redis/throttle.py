"""The ``LoginThrottle`` on Redis, shared by every replica.

Each key is a Redis hash ``<prefix><key>`` with fields ``failures``, ``last`` and
``until`` (milliseconds since the epoch, from the injected clock), and one field
``p:<token>`` per reservation in flight (when it lapses). Reserving and counting
are each one Lua script per key, so concurrent attempts on several replicas never
lose an increment and never get past the allowance together; the scripts apply
exactly the rule of :mod:`.throttle_policy`. The
logic reads the stored timestamps, never the key's TTL: TTLs (the time until the
key would be forgotten anyway) only collect garbage. Keys are handled one by one,
so the adapter also works on Redis Cluster, where an account key and an address
key live in different slots.

When Redis cannot be reached the throttle fails closed: ``check`` and
``reserve`` raise ``Unavailable`` (reason ``SERVICE_UNAVAILABLE``) and sign-in
is refused until Redis is back, while ``settle`` only logs (a reservation that
was not released lapses with its lease). See ``docs/security.md``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cortex_core import errors
from cortex_core.adapters.security.throttle_policy import (
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

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "cortex:throttle:"
UNAVAILABLE_MESSAGE = "sign-in is temporarily unavailable; retry later"

# Shared head of the scripts. KEYS[1]: the key. ARGV: now, free failures, base
# delay, max delay, window (ms), reservation token, lease (ms). Reads the live
# failures of the key (none once forgotten) and when its lock ends; ``now`` is
# moved up to the key's last failure when it is earlier (KeyState does the same).
_STATE = """
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
  -- Never before the last failure (see throttle_policy: scripts may run out of
  -- the order of their now, and a free failure stores until == last).
  now = math.max(now, last)
  if now - math.max(last, previous_until) < window then
    failures = tonumber(state[1])
    locked_until = previous_until
  end
end
"""

# Counts one failure as KeyState.after_failure does; PEXPIRE makes Redis drop
# the key once it would be forgotten (leases are far shorter than the window).
_COUNT = """
failures = failures + 1
local delay = 0
if failures > free then
  delay = math.min(base * 2 ^ math.min(failures - free - 1, 62), max_delay)
end
locked_until = math.floor(math.max(locked_until, now + delay))
redis.call('HSET', KEYS[1], 'failures', failures, 'last', now, 'until', locked_until)
redis.call('PEXPIRE', KEYS[1], math.max(1, locked_until + window - now))
"""

# Returns the wait (ms) while locked; -1 while live reservations (fields
# ``p:<token>`` holding when they lapse) are in flight and, with the failures,
# exceed the free attempts; else takes
# the reservation (or, with ARGV[8] = 1, counts at once) and returns 0.
_RESERVE = (
    _STATE
    + """
if locked_until > now then
  return locked_until - now
end
if ARGV[8] == '1' then
"""
    + _COUNT
    + """
  return 0
end
local pending = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'p:' then
    if tonumber(fields[i + 1]) <= now then
      redis.call('HDEL', KEYS[1], fields[i])
    else
      pending = pending + 1
    end
  end
end
if pending > 0 and failures + pending > free then
  return -1
end
local lease = tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'p:' .. ARGV[6], now + lease)
if redis.call('PTTL', KEYS[1]) < lease then
  redis.call('PEXPIRE', KEYS[1], lease)
end
return 0
"""
)

# Ends a reservation with a failure: drops it and counts one.
_FAIL = "redis.call('HDEL', KEYS[1], 'p:' .. ARGV[6])\n" + _STATE + _COUNT + "return 0\n"


class RedisLoginThrottle:
    """The ``LoginThrottle`` port on Redis (see :mod:`.throttle_policy` for the rule).

    ``redis`` is a ``redis.asyncio.Redis`` client built by bootstrap (with socket
    timeouts, so an unreachable server fails fast); this class never closes it.
    Raises ``ResourceExhausted`` (reason ``LOGIN_THROTTLED`` or
    ``RATE_LIMITED``) from ``check`` and ``reserve``, and ``Unavailable``
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
        self._reserve = redis.register_script(_RESERVE)
        self._fail = redis.register_script(_FAIL)

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

    async def reserve(self, keys: Sequence[str]) -> str:
        token = secrets.token_hex(8)
        await wait_for_turn(lambda: self._try_reserve(keys, token), keys)
        return token

    async def _try_reserve(self, keys: Sequence[str], token: str) -> bool:
        """Reserve every key, or none: a later key that is locked or full releases
        the reservations already taken."""
        now_ms = self._now_ms()
        taken: list[str] = []
        try:
            for key in keys:
                args = self._args(key, now_ms, token, count_now=is_register_key(key))
                answer = int(await self._reserve(keys=[self._redis_key(key)], args=args))
                if answer != 0:
                    for done in taken:
                        await self._redis.hdel(self._redis_key(done), f"p:{token}")
                    if answer > 0:
                        raise throttled(answer / 1000, keys)
                    return False
                taken.append(key)
        except (RedisError, OSError) as exc:
            raise self._unavailable("reserve", exc) from None
        return True

    async def settle(self, keys: Sequence[str], token: str, outcome: AttemptOutcome) -> None:
        now_ms = self._now_ms()
        try:
            for key in keys:
                redis_key = self._redis_key(key)
                if is_register_key(key):
                    continue  # counted when reserved
                if outcome is AttemptOutcome.FAILED:
                    await self._fail(keys=[redis_key], args=self._args(key, now_ms, token))
                elif outcome is AttemptOutcome.SUCCEEDED and is_account_key(key):
                    # Forget the failures; other attempts in flight keep their reservations.
                    await self._redis.hdel(redis_key, "failures", "last", "until", f"p:{token}")
                else:
                    await self._redis.hdel(redis_key, f"p:{token}")
        except (RedisError, OSError) as exc:
            # An unsettled reservation lapses with its lease; a lost failure is one
            # guess less counted, during an outage that refuses new attempts anyway.
            logger.warning("login throttle: could not settle an attempt: %r", exc)

    def _args(
        self, key: str, now_ms: int, token: str, *, count_now: bool = False
    ) -> list[int | str]:
        policy = self._policies.for_key(key)
        return [
            now_ms,
            policy.free_failures,
            round(policy.base_delay * 1000),
            round(policy.max_delay * 1000),
            round(policy.window * 1000),
            token,
            round(RESERVATION_LEASE * 1000),
            1 if count_now else 0,
        ]

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
