"""Password hashing (real argon2id) and the password policy."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import argon2
import pytest

from cortex_core import errors
from cortex_core.adapters.security.password_policy import (
    PasswordPolicy,
    load_common_passwords,
)
from cortex_core.adapters.security.passwords import (
    OWASP_MIN_MEMORY_COST_KIB,
    OWASP_MIN_TIME_COST,
    Argon2PasswordHasher,
)

PASSPHRASE = "correct horse battery staple on a quiet tuesday"


@pytest.fixture
async def hasher() -> AsyncIterator[Argon2PasswordHasher]:
    """The production hasher, with its default (OWASP-or-above) parameters."""
    hasher = Argon2PasswordHasher()
    yield hasher
    hasher.close()


@pytest.fixture
async def fast_hasher() -> AsyncIterator[Argon2PasswordHasher]:
    """A hasher at exactly the OWASP minimum, for tests that only need many hashes."""
    hasher = Argon2PasswordHasher(
        time_cost=OWASP_MIN_TIME_COST, memory_cost=OWASP_MIN_MEMORY_COST_KIB, max_workers=2
    )
    yield hasher
    hasher.close()


# --- hashing ------------------------------------------------------------------


async def test_a_hashed_password_verifies(hasher: Argon2PasswordHasher) -> None:
    password_hash = await hasher.hash(PASSPHRASE)

    assert await hasher.verify(password_hash, PASSPHRASE) is True


async def test_a_wrong_password_is_false_not_an_error(hasher: Argon2PasswordHasher) -> None:
    password_hash = await hasher.hash(PASSPHRASE)

    assert await hasher.verify(password_hash, PASSPHRASE + "!") is False


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA"])
async def test_a_malformed_stored_hash_verifies_as_false(
    fast_hasher: Argon2PasswordHasher, stored: str
) -> None:
    assert await fast_hasher.verify(stored, PASSPHRASE) is False


async def test_hashes_are_argon2id_at_or_above_the_owasp_minimum(
    hasher: Argon2PasswordHasher,
) -> None:
    password_hash = await hasher.hash(PASSPHRASE)
    parameters = argon2.extract_parameters(password_hash)

    assert password_hash.startswith("$argon2id$")
    assert parameters.type is argon2.Type.ID
    assert parameters.memory_cost >= OWASP_MIN_MEMORY_COST_KIB
    assert parameters.time_cost >= OWASP_MIN_TIME_COST
    assert parameters.parallelism >= 1
    assert parameters.salt_len >= 16


async def test_two_hashes_of_one_password_differ_by_salt(
    fast_hasher: Argon2PasswordHasher,
) -> None:
    assert await fast_hasher.hash(PASSPHRASE) != await fast_hasher.hash(PASSPHRASE)


async def test_a_hash_made_with_weaker_parameters_needs_rehash(
    hasher: Argon2PasswordHasher,
) -> None:
    legacy = argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)
    old_hash = legacy.hash(PASSPHRASE)

    assert hasher.needs_rehash(old_hash) is True
    assert await hasher.verify(old_hash, PASSPHRASE) is True
    assert hasher.needs_rehash(await hasher.hash(PASSPHRASE)) is False


def test_an_argon2i_hash_needs_rehash_to_argon2id(hasher: Argon2PasswordHasher) -> None:
    p = hasher.parameters
    argon2i = argon2.PasswordHasher(
        time_cost=p.time_cost, memory_cost=p.memory_cost, parallelism=1, type=argon2.Type.I
    )

    assert hasher.needs_rehash(argon2i.hash(PASSPHRASE)) is True


async def test_a_long_passphrase_is_not_truncated(fast_hasher: Argon2PasswordHasher) -> None:
    long_passphrase = ("a long passphrase that goes on " * 20)[:500]
    password_hash = await fast_hasher.hash(long_passphrase)

    assert await fast_hasher.verify(password_hash, long_passphrase) is True
    assert await fast_hasher.verify(password_hash, long_passphrase[:-1] + "X") is False
    assert await fast_hasher.verify(password_hash, long_passphrase[:-1]) is False


async def test_the_same_password_in_another_unicode_form_verifies(
    fast_hasher: Argon2PasswordHasher,
) -> None:
    composed = "caf\u00e9 au lait, s'il vous pla\u00eet"
    decomposed = "cafe\u0301 au lait, s'il vous plai\u0302t"
    password_hash = await fast_hasher.hash(composed)

    assert await fast_hasher.verify(password_hash, decomposed) is True


async def max_loop_lag_while_hashing(hasher: Argon2PasswordHasher, count: int) -> float:
    """Run ``count`` hashes at once; return the worst lateness of a 5 ms ticker."""
    max_lag = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal max_lag
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            max_lag = max(max_lag, time.perf_counter() - before - 0.005)

    tick = asyncio.create_task(ticker())
    hashes = await asyncio.gather(*(hasher.hash(f"{PASSPHRASE} {i}") for i in range(count)))
    done.set()
    await tick
    assert len(set(hashes)) == count
    return max_lag


async def test_the_event_loop_stays_responsive_while_twenty_hashes_run(
    hasher: Argon2PasswordHasher,
) -> None:
    # One hash takes ~150 ms, so a hash on the loop thread can never pass. The
    # machine is shared, though: another process can deschedule the loop for
    # tens of ms, so the best of three runs is judged (p99 figures: bench/).
    lags = []
    for _ in range(3):
        lags.append(await max_loop_lag_while_hashing(hasher, 20))
        if lags[-1] < 0.050:
            break

    assert min(lags) < 0.050, f"the event loop stalled for {min(lags) * 1000:.1f} ms at best"


async def test_waiting_callers_beyond_the_bound_are_refused_at_once() -> None:
    hasher = Argon2PasswordHasher(
        time_cost=OWASP_MIN_TIME_COST,
        memory_cost=OWASP_MIN_MEMORY_COST_KIB,
        max_workers=1,
        max_pending=2,
    )
    try:
        results = await asyncio.gather(
            *(hasher.hash(PASSPHRASE) for _ in range(6)), return_exceptions=True
        )
    finally:
        hasher.close()

    refused = [r for r in results if isinstance(r, errors.ResourceExhausted)]
    assert refused
    assert all(r.reason == "PASSWORD_HASHING_BUSY" for r in refused)
    assert all(isinstance(r, str) for r in results if r not in refused)


async def test_a_cancelled_caller_frees_its_worker(fast_hasher: Argon2PasswordHasher) -> None:
    task = asyncio.create_task(fast_hasher.hash(PASSPHRASE))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    password_hash = await asyncio.wait_for(fast_hasher.hash(PASSPHRASE), timeout=10)
    assert await fast_hasher.verify(password_hash, PASSPHRASE)


async def test_a_closed_hasher_refuses_work() -> None:
    hasher = Argon2PasswordHasher()
    hasher.close()

    with pytest.raises(RuntimeError):
        await hasher.hash(PASSPHRASE)


async def test_a_dummy_verify_costs_about_as_much_as_a_real_one(
    hasher: Argon2PasswordHasher,
) -> None:
    password_hash = await hasher.hash(PASSPHRASE)
    await hasher.warm_up()

    async def timed(call: object) -> float:
        assert asyncio.iscoroutine(call)
        start = time.perf_counter()
        await call
        return time.perf_counter() - start

    real, dummy = [], []
    for _ in range(5):
        real.append(await timed(hasher.verify(password_hash, "wrong password")))
        dummy.append(await timed(hasher.verify_dummy("wrong password")))

    ratio = statistics.median(dummy) / statistics.median(real)
    assert 0.5 <= ratio <= 2.0, f"dummy/real verify time ratio {ratio:.2f}"


# --- policy -------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy()


def violation_reasons(error: errors.InvalidArgument) -> list[str]:
    return [violation.reason for violation in error.violations]


def test_a_seven_character_password_is_too_short() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        PasswordPolicy(min_chars=8).check("zq7$Lm2")

    assert caught.value.message == "password does not meet the policy"
    assert violation_reasons(caught.value) == ["PASSWORD_TOO_SHORT"]
    assert caught.value.violations[0].field == "password"


def test_violations_name_the_field_they_are_about(policy: PasswordPolicy) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        policy.check("zq7$Lm2", field="new_password")

    assert violation_reasons(caught.value) == ["PASSWORD_TOO_SHORT"]
    assert caught.value.violations[0].field == "new_password"


def test_length_is_counted_in_code_points_after_nfkc(policy: PasswordPolicy) -> None:
    # Eight full-width letters are eight code points after NFKC, not 24 UTF-8 bytes.
    policy.check("\uff54\uff57\uff45\uff4c\uff56\uff45\uff4c\uff51")
    # Seven letters plus a combining accent compose into seven code points.
    with pytest.raises(errors.InvalidArgument) as caught:
        policy.check("zqxjvke\u0301")
    assert violation_reasons(caught.value) == ["PASSWORD_TOO_SHORT"]


def test_a_longer_minimum_can_be_configured() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        PasswordPolicy(min_chars=12).check("zq7$Lm2vW9x")

    assert violation_reasons(caught.value) == ["PASSWORD_TOO_SHORT"]


def test_a_password_over_1024_characters_is_too_long(policy: PasswordPolicy) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        policy.check("x7" * 513)

    assert violation_reasons(caught.value) == ["PASSWORD_TOO_LONG"]


def test_a_huge_password_is_refused_without_normalising_it(policy: PasswordPolicy) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        policy.check("x" * 4_000_000)

    assert violation_reasons(caught.value) == ["PASSWORD_TOO_LONG"]


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "PASSWORD1234",
        "Qwertyuiop123",
        "1qaz2wsx3edc",
        "Summer2024!",
        # one repeat or one sequence, whatever its length
        "lovelove",
        "88888888",
        "987654321",
        "abcdefghij",
    ],
)
def test_common_passwords_are_refused_whatever_their_case(
    policy: PasswordPolicy, password: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        policy.check(password)

    assert violation_reasons(caught.value) == ["PASSWORD_TOO_COMMON"]


def test_every_failed_rule_is_reported() -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        PasswordPolicy().check("ada.lov", email="ada.lov@example.com")

    assert violation_reasons(caught.value) == ["PASSWORD_TOO_SHORT", "PASSWORD_TOO_COMMON"]


@pytest.mark.parametrize("password", ["ada.lovelace.1815", "ADA.LOVELACE.1815@example.com"])
def test_the_email_or_its_local_part_is_refused(policy: PasswordPolicy, password: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        policy.check(password, email="Ada.Lovelace.1815@example.com")

    assert violation_reasons(caught.value) == ["PASSWORD_TOO_COMMON"]


def test_a_long_passphrase_is_accepted(policy: PasswordPolicy) -> None:
    policy.check(PASSPHRASE, email="someone@example.com")
    policy.check("ünïcödé pässphräse with ümläuts")
    policy.check(("lorem ipsum dolor sit amet " * 40)[:1024])


def test_the_list_comes_from_a_breach_derived_package_and_is_case_folded() -> None:
    common = load_common_passwords()

    assert len(common) >= 30_000
    assert {"password", "12345678", "qwertyuiop", "iloveyou", "trustno1"} <= common
    assert all(entry == entry.casefold() for entry in common)


def _independent_top_list() -> list[str]:
    """Django's list of the 20,000 most common passwords (Royce Williams, from breach
    data), in frequency order: a second source, not the one the policy reads."""
    spec = importlib.util.find_spec("django")
    assert spec is not None
    assert spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0], "contrib", "auth", "common-passwords.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [line.strip() for line in lines if line.strip()]


def test_the_top_thousand_breached_passwords_of_allowed_length_are_refused(
    policy: PasswordPolicy,
) -> None:
    candidates = [p for p in _independent_top_list()[:1000] if len(p) >= 8]
    accepted = []
    for password in candidates:
        try:
            policy.check(password)
        except errors.InvalidArgument:
            continue
        accepted.append(password)

    # What is left is mostly artefacts of that corpus (``fqrg7cs493``, ``j38ifubn``),
    # not passwords people choose (30 today); the hand-made list accepted 150 of 340.
    assert len(candidates) > 300
    assert len(accepted) <= len(candidates) // 10, accepted
