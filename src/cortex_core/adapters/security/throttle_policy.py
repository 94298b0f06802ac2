"""The throttling policy both ``LoginThrottle`` adapters implement.

Three kinds of key, each with its own :class:`ThrottlePolicy` (see
:class:`ThrottlePolicies`): ``account:<email>`` (sign-in attempts on one
account), ``address:<ip>`` (failed sign-ins from one client address, with a
higher threshold, so the people behind one NAT or proxy are not locked out by
one account's failures) and ``register:<ip>`` (sign-ups from one address).

Per key:

- an attempt takes a *reservation* before the password is checked
  (``reserve``): refused while the key is locked, and made to wait while
  reservations are in flight and, with the failures so far, already exceed
  ``free_failures`` (past the free attempts, one attempt at a time); so a burst
  of parallel guesses gets at most ``free_failures + 1`` of them checked, while
  parallel *correct* sign-ins just wait for the first one to succeed (which
  forgets the account's count);
- ``settle`` ends the reservation: a failure is counted, a success forgets the
  *account* key and gives the attempt back to the *address* key (a client
  address that guessed at many accounts stays slowed down even if one guess was
  right), and an abandoned attempt (an outage, a cancelled call) counts nothing;
- sign-ups (``register:`` keys) are counted when reserved and never given back;
- the first ``free_failures`` failures cost nothing; failure number
  ``free_failures + n`` locks the key for ``min(base_delay * 2**(n - 1),
  max_delay)`` seconds (1 s, 2 s, 4 s, … 15 min);
- a key is forgotten once ``window`` seconds pass with no failure and no lock,
  i.e. ``window`` after the later of its last failure and the end of its lock;
- a reservation that is never settled (its replica died) lapses after
  :data:`RESERVATION_LEASE` seconds;
- time never runs backwards for a key: an attempt timestamped before the key's
  last failure is handled as if at that failure. Timestamps are read before the
  Redis scripts run (and replicas' clocks differ), so scripts can run out of the
  order of their ``now``; a free failure records ``locked_until == now``, which
  an attempt with an earlier ``now`` would otherwise read as a lock of a few
  milliseconds (parallel sign-ups refused far under their limit).

The state of a key is three numbers (failures, last failure, locked until) plus
its reservations, so the Redis adapter can apply the same rule in Lua scripts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence

from cortex_core import errors

ACCOUNT_PREFIX = "account:"
ADDRESS_PREFIX = "address:"
REGISTER_PREFIX = "register:"
THROTTLED_MESSAGE = "too many failed sign-in attempts; retry later"
REGISTER_THROTTLED_MESSAGE = "too many sign-ups from this address; retry later"
#: Seconds after which a reservation that was never settled stops counting.
RESERVATION_LEASE = 30.0
#: How long ``reserve`` waits for reservations in flight before refusing, and how
#: often it looks again.
MAX_RESERVE_WAIT = 10.0
RESERVE_POLL = 0.02
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
        return max(0.0, self.locked_until - max(now, self.last_failure))

    def after_failure(self, now: float, policy: ThrottlePolicy) -> KeyState:
        """The state once one more attempt is counted at ``now``."""
        alive = not self.forgotten(now, policy)
        if alive:
            now = max(now, self.last_failure)  # time never runs backwards for a key
        failures = self.failures + 1 if alive else 1
        locked_until = max(self.locked_until if alive else now, now + policy.delay_after(failures))
        return KeyState(failures, now, locked_until)

    def live_failures(self, now: float, policy: ThrottlePolicy) -> int:
        """Failures that still count at ``now`` (none once forgotten)."""
        return 0 if self.forgotten(now, policy) else self.failures


NO_FAILURES = KeyState(0, float("-inf"), float("-inf"))


@dataclasses.dataclass(frozen=True, slots=True)
class ThrottlePolicies:
    """The policy of each kind of key (defaults in ``docs/security.md``)."""

    account: ThrottlePolicy = ThrottlePolicy()
    address: ThrottlePolicy = ThrottlePolicy(free_failures=50, max_delay=5 * 60.0)
    register: ThrottlePolicy = ThrottlePolicy(free_failures=100, window=60 * 60.0)

    @classmethod
    def same(cls, policy: ThrottlePolicy) -> ThrottlePolicies:
        """One policy for every kind of key."""
        return cls(account=policy, address=policy, register=policy)

    def for_key(self, key: str) -> ThrottlePolicy:
        if key.startswith(ADDRESS_PREFIX):
            return self.address
        if key.startswith(REGISTER_PREFIX):
            return self.register
        return self.account


def account_key(email: str) -> str:
    """The throttle key of an account: its email, trimmed and case-folded."""
    return bounded_key(ACCOUNT_PREFIX + email.strip().casefold())


def address_key(address: str) -> str:
    """The throttle key of a client address (an IP, without the port)."""
    return bounded_key(ADDRESS_PREFIX + address.strip().lower())


def register_key(address: str) -> str:
    """The throttle key of sign-ups from a client address."""
    return bounded_key(REGISTER_PREFIX + address.strip().lower())


def bounded_key(key: str) -> str:
    """``key`` itself, or its prefix plus a SHA-256 digest when it is very long."""
    if len(key) <= MAX_KEY_CHARS:
        return key
    prefix, _, rest = key.partition(":")
    return f"{prefix}:sha256:{hashlib.sha256(rest.encode()).hexdigest()}"


def is_account_key(key: str) -> bool:
    return key.startswith(ACCOUNT_PREFIX)


def is_register_key(key: str) -> bool:
    return key.startswith(REGISTER_PREFIX)


async def wait_for_turn(try_reserve: Callable[[], Awaitable[bool]], keys: Sequence[str]) -> None:
    """Call ``try_reserve`` (which raises while a key is locked, and returns False
    while reservations in flight fill the key) until it reserves; after
    :data:`MAX_RESERVE_WAIT` seconds of waiting, refuse with a short retry."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_RESERVE_WAIT
    while not await try_reserve():
        if loop.time() >= deadline:
            raise throttled(1.0, keys)
        await asyncio.sleep(RESERVE_POLL)


def throttled(wait: float, keys: Sequence[str] = ()) -> errors.ResourceExhausted:
    """The error for ``keys`` that must wait ``wait`` seconds (rounded up to the ms):
    ``RATE_LIMITED`` for sign-up keys, else ``LOGIN_THROTTLED``."""
    retry_after = max(1, math.ceil(wait * 1000)) / 1000
    if any(key.startswith(REGISTER_PREFIX) for key in keys):
        return errors.ResourceExhausted(
            REGISTER_THROTTLED_MESSAGE, retry_after=retry_after, reason="RATE_LIMITED"
        )
    return errors.ResourceExhausted(
        THROTTLED_MESSAGE, retry_after=retry_after, reason="LOGIN_THROTTLED"
    )
