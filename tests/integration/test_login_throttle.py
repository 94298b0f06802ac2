"""Login throttling, in memory and on a real Redis, with a manual clock.

Redis tests read ``CORTEX_TEST_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/0``);
without it they skip, except with ``CI=true`` where they fail. Each test uses
its own key prefix, and removes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from support.databases import require_env

from cortex_core import errors
from cortex_core.adapters.clock import ManualClock
from cortex_core.adapters.redis.throttle import RedisLoginThrottle
from cortex_core.adapters.security.throttle import InMemoryLoginThrottle
from cortex_core.adapters.security.throttle_policy import (
    ThrottlePolicies,
    ThrottlePolicy,
    account_key,
    address_key,
    register_key,
)
from cortex_core.ports import AttemptOutcome, LoginThrottle

ACCOUNT = account_key("Ada@Example.com")
ADDRESS = address_key("203.0.113.7")
KEYS = [ACCOUNT, ADDRESS]
WINDOW = 15 * 60

#: The rule's own tests use one policy for every kind of key; the defaults per kind
#: have tests of their own below.
SAME = ThrottlePolicies.same(ThrottlePolicy())

ThrottleFactory = Callable[..., LoginThrottle]


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(require_env("CORTEX_TEST_REDIS_URL"))
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: Redis) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"cortex:test:{uuid.uuid4().hex}:throttle:"
    yield prefix
    async for key in redis_client.scan_iter(match=f"{prefix}*"):
        await redis_client.delete(key)


@pytest.fixture(params=["memory", "redis"])
def make_throttle(request: pytest.FixtureRequest) -> ThrottleFactory:
    """Build throttles of one kind; Redis ones built by one factory share state."""
    if request.param == "memory":
        return lambda clock, policies=SAME: InMemoryLoginThrottle(clock, policies=policies)
    client: Redis = request.getfixturevalue("redis_client")
    prefix: str = request.getfixturevalue("redis_prefix")
    return lambda clock, policies=SAME: RedisLoginThrottle(
        client, clock, policies=policies, prefix=prefix
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def throttle(make_throttle: ThrottleFactory, clock: ManualClock) -> LoginThrottle:
    return make_throttle(clock)


async def fail(
    throttle: LoginThrottle, clock: ManualClock, times: int, keys: list[str] = KEYS
) -> None:
    """Make ``times`` counted (failed) attempts, waiting out each lock as a patient
    attacker would."""
    for _ in range(times):
        while True:
            try:
                await fail_once(throttle, keys)
                break
            except errors.ResourceExhausted as refused:
                clock.advance(refused.retry_after or 0.0)


async def fail_once(throttle: LoginThrottle, keys: Sequence[str] = KEYS) -> None:
    """One attempt that is reserved, then fails."""
    token = await throttle.reserve(keys)
    await throttle.settle(keys, token, AttemptOutcome.FAILED)


async def succeed_once(throttle: LoginThrottle, keys: Sequence[str] = KEYS) -> None:
    token = await throttle.reserve(keys)
    await throttle.settle(keys, token, AttemptOutcome.SUCCEEDED)


async def guess_in_parallel(throttle: LoginThrottle, keys: Sequence[str]) -> None:
    """Reserve, yield to the others (as hashing would), then fail."""
    token = await throttle.reserve(keys)
    await asyncio.sleep(0.01)
    await throttle.settle(keys, token, AttemptOutcome.FAILED)


async def retry_after(throttle: LoginThrottle, keys: list[str] = KEYS) -> float | None:
    """The wait ``check`` demands, or None when sign-in may proceed."""
    refusal: errors.ResourceExhausted | None = None
    try:
        await throttle.check(keys)
    except errors.ResourceExhausted as exc:
        refusal = exc
    if refusal is None:
        return None
    assert refusal.reason == "LOGIN_THROTTLED"
    assert refusal.message == "too many failed sign-in attempts; retry later"
    return refusal.retry_after


async def test_the_first_five_failures_are_free(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 5)

    assert await retry_after(throttle) is None


async def test_the_sixth_failure_locks_for_about_a_second(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 6)

    assert await retry_after(throttle) == pytest.approx(1.0, abs=0.01)


async def test_each_further_failure_doubles_the_delay(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 5)
    waits = []
    for _ in range(5):
        await fail(throttle, clock, 1)
        wait = await retry_after(throttle)
        assert wait is not None
        waits.append(wait)
        clock.advance(wait)
        assert await retry_after(throttle) is None

    assert waits == pytest.approx([1, 2, 4, 8, 16], abs=0.01)


async def test_the_delay_is_capped_at_fifteen_minutes(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 40)

    assert await retry_after(throttle) == pytest.approx(900, abs=0.01)


async def test_a_locked_key_counts_down_with_the_clock(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 8)
    clock.advance(1.5)

    assert await retry_after(throttle) == pytest.approx(2.5, abs=0.01)


async def test_check_reports_the_longest_wait_among_the_keys(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 8, [ADDRESS])
    await fail(throttle, clock, 6, [ACCOUNT])

    assert await retry_after(throttle, [ACCOUNT]) == pytest.approx(1, abs=0.01)
    assert await retry_after(throttle, KEYS) == pytest.approx(4, abs=0.01)


async def test_unknown_keys_and_no_keys_may_proceed(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 9)

    assert await retry_after(throttle, [account_key("someone-else@example.com")]) is None
    assert await retry_after(throttle, []) is None


async def test_success_clears_the_account_but_not_the_address(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 7)
    clock.advance(2)  # the lock of the seventh failure ends

    await succeed_once(throttle)

    assert await retry_after(throttle, [ACCOUNT]) is None
    await fail(throttle, clock, 5, [ACCOUNT])
    assert await retry_after(throttle, [ACCOUNT]) is None
    await fail(throttle, clock, 1, [ADDRESS])  # its eighth failure
    assert await retry_after(throttle, [ADDRESS]) == pytest.approx(4, abs=0.01)


async def test_failures_are_forgotten_after_a_quiet_window(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 5)
    clock.advance(WINDOW - 1)
    await fail(throttle, clock, 1)
    assert await retry_after(throttle) == pytest.approx(1, abs=0.01)

    clock.advance(1 + WINDOW)
    await fail(throttle, clock, 5)

    assert await retry_after(throttle) is None


async def test_the_quiet_window_starts_when_the_lock_ends(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    await fail(throttle, clock, 40)  # locked for 15 minutes
    clock.advance(900 + WINDOW - 1)
    await fail(throttle, clock, 1)

    assert await retry_after(throttle) == pytest.approx(900, abs=0.01)


async def test_a_custom_policy_is_honoured(clock: ManualClock) -> None:
    policy = ThrottlePolicy(free_failures=2, base_delay=10, max_delay=30, window=60)
    throttle = InMemoryLoginThrottle(clock, policy)

    await fail(throttle, clock, 3)
    assert await retry_after(throttle) == pytest.approx(10)
    await fail(throttle, clock, 3)
    assert await retry_after(throttle) == pytest.approx(30)


async def test_the_in_memory_throttle_keeps_a_bounded_number_of_keys(
    clock: ManualClock,
) -> None:
    throttle = InMemoryLoginThrottle(clock, max_keys=100)

    for i in range(1000):
        await fail_once(throttle, [address_key(f"198.51.100.{i}")])

    assert len(throttle) == 100


async def test_the_in_memory_throttle_prunes_forgotten_keys(clock: ManualClock) -> None:
    throttle = InMemoryLoginThrottle(clock)
    for i in range(3):
        await fail_once(throttle, [address_key(f"198.51.100.{i}")])

    clock.advance(WINDOW)
    await fail_once(throttle, [ACCOUNT])

    assert len(throttle) == 1


# --- Redis only -------------------------------------------------------------------


async def test_two_redis_replicas_share_failures(
    redis_client: Redis, redis_prefix: str, clock: ManualClock
) -> None:
    first = RedisLoginThrottle(redis_client, clock, prefix=redis_prefix)
    second = RedisLoginThrottle(redis_client, clock, prefix=redis_prefix)

    await fail(first, clock, 3)
    await fail(second, clock, 3)

    assert await retry_after(first) == pytest.approx(1, abs=0.01)
    assert await retry_after(second) == pytest.approx(1, abs=0.01)
    await second.settle(KEYS, "no-reservation", AttemptOutcome.SUCCEEDED)
    assert await retry_after(first, [ACCOUNT]) is None


async def test_parallel_attempts_on_replicas_never_get_past_the_lock(
    redis_client: Redis, redis_prefix: str, clock: ManualClock
) -> None:
    other_client = Redis.from_url(require_env("CORTEX_TEST_REDIS_URL"))
    try:
        replicas = [
            RedisLoginThrottle(redis_client, clock, prefix=redis_prefix, policies=SAME),
            RedisLoginThrottle(other_client, clock, prefix=redis_prefix, policies=SAME),
        ]
        outcomes = await asyncio.gather(
            *(guess_in_parallel(replicas[i % 2], KEYS) for i in range(32)),
            return_exceptions=True,
        )
    finally:
        await other_client.aclose()

    admitted = [outcome for outcome in outcomes if outcome is None]
    assert len(admitted) == 6  # five free attempts, and the one that sets the lock
    assert await retry_after(replicas[0]) == pytest.approx(1, abs=0.01)


async def test_redis_keys_expire_once_they_would_be_forgotten(
    redis_client: Redis, redis_prefix: str, clock: ManualClock
) -> None:
    throttle = RedisLoginThrottle(redis_client, clock, prefix=redis_prefix)

    await fail(throttle, clock, 7)

    ttl_ms = await redis_client.pttl(f"{redis_prefix}{ACCOUNT}")
    assert (WINDOW + 2 - 1) * 1000 < ttl_ms <= (WINDOW + 2) * 1000


async def test_an_unreachable_redis_fails_closed(clock: ManualClock) -> None:
    no_retries = Retry(NoBackoff(), retries=0)
    client = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=no_retries)
    throttle = RedisLoginThrottle(client, clock)
    try:
        with pytest.raises(errors.Unavailable) as on_check:
            await throttle.check(KEYS)
        with pytest.raises(errors.Unavailable) as on_failure:
            await throttle.reserve(KEYS)
        await throttle.settle(KEYS, "token", AttemptOutcome.SUCCEEDED)
    finally:
        await client.aclose()

    assert on_check.value.reason == on_failure.value.reason == "SERVICE_UNAVAILABLE"
    assert "Redis" not in on_check.value.message


async def test_a_burst_of_parallel_attempts_admits_only_the_free_ones_and_one_more(
    throttle: LoginThrottle,
) -> None:
    outcomes = await asyncio.gather(
        *(guess_in_parallel(throttle, KEYS) for _ in range(32)), return_exceptions=True
    )

    refused = [o for o in outcomes if isinstance(o, errors.ResourceExhausted)]
    assert outcomes.count(None) == 6
    assert len(refused) == 26
    assert {o.reason for o in refused} == {"LOGIN_THROTTLED"}


# --- the default policy of each kind of key ------------------------------------------


@pytest.fixture
def defaults(make_throttle: ThrottleFactory, clock: ManualClock) -> LoginThrottle:
    return make_throttle(clock, ThrottlePolicies())


async def test_one_accounts_failures_do_not_lock_its_address_out(
    defaults: LoginThrottle, clock: ManualClock
) -> None:
    await fail(defaults, clock, 6)  # account and address

    assert await retry_after(defaults, [ACCOUNT]) == pytest.approx(1, abs=0.01)
    assert await retry_after(defaults, [account_key("colleague@example.com"), ADDRESS]) is None


async def test_an_address_is_locked_after_many_failures_across_accounts(
    defaults: LoginThrottle, clock: ManualClock
) -> None:
    for i in range(51):
        await fail_once(defaults, [account_key(f"user{i}@example.com"), ADDRESS])

    assert await retry_after(defaults, [ADDRESS]) == pytest.approx(1, abs=0.01)


async def test_a_success_gives_the_attempt_back_to_the_address(
    defaults: LoginThrottle, clock: ManualClock
) -> None:
    for i in range(200):  # many people behind one NAT, each signing in once
        keys = [account_key(f"user{i}@example.com"), ADDRESS]
        await succeed_once(defaults, keys)

    assert await retry_after(defaults, [ADDRESS]) is None


async def test_sign_ups_from_one_address_are_throttled_and_never_given_back(
    defaults: LoginThrottle, clock: ManualClock
) -> None:
    key = [register_key("203.0.113.7")]
    for _ in range(ThrottlePolicies().register.free_failures + 1):
        await succeed_once(defaults, key)

    with pytest.raises(errors.ResourceExhausted) as refused:
        await defaults.reserve(key)

    assert refused.value.reason == "RATE_LIMITED"
    assert refused.value.retry_after == pytest.approx(1, abs=0.01)


async def test_parallel_correct_sign_ins_wait_for_each_other_instead_of_being_refused(
    throttle: LoginThrottle,
) -> None:
    async def sign_in() -> None:
        token = await throttle.reserve(KEYS)
        await asyncio.sleep(0.01)  # the password check
        await throttle.settle(KEYS, token, AttemptOutcome.SUCCEEDED)

    outcomes = await asyncio.gather(*(sign_in() for _ in range(20)), return_exceptions=True)

    assert outcomes == [None] * 20


async def test_a_reservation_never_settled_lapses(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    for _ in range(6):
        await throttle.reserve(KEYS)  # their replica died before settling
    clock.advance(31)

    token = await throttle.reserve(KEYS)

    assert token


async def test_an_abandoned_attempt_counts_nothing(throttle: LoginThrottle) -> None:
    for _ in range(20):
        token = await throttle.reserve(KEYS)
        await throttle.settle(KEYS, token, AttemptOutcome.ABANDONED)

    assert await retry_after(throttle) is None


async def test_an_attempt_timestamped_before_a_free_failure_is_not_locked_out(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    # Timestamps are read before the Redis scripts run, so attempts in flight reach
    # a key out of the order of their clocks: a free failure must not look like a
    # lock of a few milliseconds to an attempt stamped just before it.
    signups = [register_key("203.0.113.7")]
    await fail_once(throttle)
    await succeed_once(throttle, signups)
    clock.advance(-0.005)

    assert await retry_after(throttle) is None
    await fail_once(throttle)
    await succeed_once(throttle, signups)
    clock.advance(-0.005)
    await fail_once(throttle)  # and one earlier still, after the earlier failure
    await succeed_once(throttle, signups)
