"""The login-throttling policy both ``LoginThrottle`` adapters implement.

Per key (``account:<email>`` or ``address:<ip>``):

- the first ``free_failures`` failures cost nothing;
- failure number ``free_failures + n`` locks the key for
  ``min(base_delay * 2**(n - 1), max_delay)`` seconds (1 s, 2 s, 4 s, … 15 min);
- a key is forgotten once ``window`` seconds pass with no failure and no lock,
  i.e. ``window`` after the later of its last failure and the end of its lock;
- a successful sign-in forgets the *account* key only: a client address that
  guessed at many accounts stays slowed down even if one guess was right.

The state of a key is three numbers (failures, last failure, locked until), so
the Redis adapter can apply the same rule in a Lua script.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

from cortex_core import errors

ACCOUNT_PREFIX = "account:"
ADDRESS_PREFIX = "address:"
THROTTLED_MESSAGE = "too many failed sign-in attempts; retry later"
#: Keys longer than this are replaced by a digest so state stays small per key.
MAX_KEY_CHARS = 200


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """Numbers of the policy, in failures and seconds."""

    free_failures: int = 5
    base_delay: float = 1.0
    max_delay: float = 15 * 60.0
    window: float = 15 * 60.0

    def __post_init__(self) -> None:
        if self.free_failures < 0:
            raise ValueError("free_failures must not be negative")
        if not 0 < self.base_delay <= self.max_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if self.window <= 0:
            raise ValueError("window must be positive")

    def delay_after(self, failures: int) -> float:
        """Seconds of lock-out imposed by the ``failures``-th failure in a row."""
        excess = failures - self.free_failures
        if excess <= 0:
            return 0.0
        return min(self.base_delay * 2.0 ** min(excess - 1, 62), self.max_delay)


@dataclasses.dataclass(frozen=True, slots=True)
class KeyState:
    """What is remembered about one key; times are seconds since the epoch."""

    failures: int
    last_failure: float
    locked_until: float

    def forgotten(self, now: float, policy: ThrottlePolicy) -> bool:
        """True once a whole window has passed with neither a failure nor a lock."""
        return now - max(self.last_failure, self.locked_until) >= policy.window

    def wait(self, now: float, policy: ThrottlePolicy) -> float:
        """Seconds this key must still wait (0 when it may try now)."""
        if self.forgotten(now, policy):
            return 0.0
        return max(0.0, self.locked_until - now)

    def after_failure(self, now: float, policy: ThrottlePolicy) -> KeyState:
        """The state once one more failure happens at ``now``."""
        alive = not self.forgotten(now, policy)
        failures = self.failures + 1 if alive else 1
        locked_until = max(self.locked_until if alive else now, now + policy.delay_after(failures))
        return KeyState(failures, now, locked_until)


NO_FAILURES = KeyState(0, float("-inf"), float("-inf"))


def account_key(email: str) -> str:
    """The throttle key of an account: its email, trimmed and case-folded."""
    return bounded_key(ACCOUNT_PREFIX + email.strip().casefold())


def address_key(address: str) -> str:
    """The throttle key of a client address (an IP, without the port)."""
    return bounded_key(ADDRESS_PREFIX + address.strip().lower())


def bounded_key(key: str) -> str:
    """``key`` itself, or its prefix plus a SHA-256 digest when it is very long."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    prefix, _, rest = key.partition(":")
    return f"{prefix}:sha256:{hashlib.sha256(rest.encode()).hexdigest()}"


def is_account_key(key: str) -> bool:
    return key.startswith(ACCOUNT_PREFIX)


def throttled(wait: float) -> errors.ResourceExhausted:
    """The error for a key that must wait ``wait`` seconds (rounded up to the ms)."""
    return errors.ResourceExhausted(
        THROTTLED_MESSAGE,
        retry_after=max(1, math.ceil(wait * 1000)) / 1000,
        reason="LOGIN_THROTTLED",
    )
