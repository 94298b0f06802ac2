"""Login and sign-up throttling as a client sees it, over a real server.

The server runs on SQLite with a manual clock (so no lock expires by itself);
the throttle logic itself is covered per adapter in ``test_login_throttle.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from redis.asyncio import Redis
from support.clients import PASSWORD, Client, auth_pb, session_pb
from support.databases import require_env
from support.inprocess import running_app
from support.rpc import details

from cortex_core.adapters.clock import ManualClock
from cortex_core.adapters.security.throttle_policy import register_key
from cortex_core.settings import Settings


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as error:
        info = details(error).get("ErrorInfo")
        return error.code(), info.reason if info else ""
    return grpc.StatusCode.OK, ""


@pytest.fixture
async def address(tmp_path: Path) -> AsyncIterator[str]:
    async with running_app(tmp_path, clock=ManualClock()) as running:
        yield running.address


async def test_parallel_guesses_are_counted_before_any_password_is_checked(
    address: str,
) -> None:
    client = Client(address)
    try:
        account = await client.register()
        wrong = auth_pb.LoginRequest(email=account.email, password="wrong password here")
        outcomes = await asyncio.gather(
            *(_code(client.auth.Login(wrong, timeout=60)) for _ in range(32))
        )
    finally:
        await client.close()

    checked = [o for o in outcomes if o[1] == "INVALID_CREDENTIALS"]
    assert len(checked) <= 6  # five free guesses, and the one that sets the lock
    assert outcomes.count((grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED")) >= 26


async def test_parallel_correct_sign_ins_to_one_account_all_succeed(address: str) -> None:
    client = Client(address)
    try:
        account = await client.register()
        right = auth_pb.LoginRequest(email=account.email, password=PASSWORD)
        outcomes = await asyncio.gather(
            *(_code(client.auth.Login(right, timeout=60)) for _ in range(12))
        )
    finally:
        await client.close()

    assert outcomes == [(grpc.StatusCode.OK, "")] * 12


async def test_one_accounts_failures_do_not_lock_out_others_behind_the_same_address(
    address: str,
) -> None:
    client = Client(address)
    try:
        victim, colleague = await client.register(), await client.register()
        wrong = auth_pb.LoginRequest(email=victim.email, password="wrong password here")
        for _ in range(8):
            await _code(client.auth.Login(wrong))

        victim_again = await _code(client.login(victim))
        colleague_in = await _code(client.login(colleague))
    finally:
        await client.close()

    assert victim_again == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED")
    assert colleague_in == (grpc.StatusCode.OK, "")


async def test_sign_ups_are_throttled_per_address_with_retry_info(tmp_path: Path) -> None:
    async with running_app(tmp_path, clock=ManualClock(), register_address_attempts=2) as running:
        client = Client(running.address)
        try:
            outcomes = [await _code(client.register()) for _ in range(3)]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.register()
        finally:
            await client.close()

    assert outcomes == [(grpc.StatusCode.OK, "")] * 3
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(refused.value)["ErrorInfo"].reason == "RATE_LIMITED"
    assert details(refused.value)["RetryInfo"].retry_delay.seconds >= 1


async def _session_address(address: str, forwarded_for: str | None) -> str:
    client = Client(address)
    try:
        account = await client.register()
        metadata = (("x-forwarded-for", forwarded_for),) if forwarded_for else ()
        signed_in = await client.auth.Login(
            auth_pb.LoginRequest(email=account.email, password=PASSWORD),
            metadata=metadata,
            timeout=30,
        )
        sessions = await client.sessions.ListSessions(
            session_pb.ListSessionsRequest(parent="users/-"),
            metadata=(("authorization", f"Bearer {signed_in.access_token}"),),
            timeout=30,
        )
    finally:
        await client.close()
    return next(s.client_address for s in sessions.sessions if s.name == signed_in.session)


async def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy(
    tmp_path: Path,
) -> None:
    trusted = Settings.from_env({"CORTEX_TRUSTED_PROXIES": "127.0.0.1/32,::1"}).trusted_proxies
    # A client's own forged entry comes first; the proxy appended the address it saw.
    chain = "198.51.100.66, 203.0.113.9"
    async with running_app(tmp_path / "a", trusted_proxies=trusted) as behind_proxy:
        via_proxy = await _session_address(behind_proxy.address, chain)
        garbled = await _session_address(behind_proxy.address, "not-an-ip")
    async with running_app(tmp_path / "b") as direct:
        forged = await _session_address(direct.address, chain)
    other = Settings.from_env({"CORTEX_TRUSTED_PROXIES": "10.0.0.0/8"}).trusted_proxies
    async with running_app(tmp_path / "c", trusted_proxies=other) as elsewhere:
        untrusted_peer = await _session_address(elsewhere.address, chain)

    assert via_proxy == "203.0.113.9"
    assert garbled == "127.0.0.1"
    assert forged == "127.0.0.1"
    assert untrusted_peer == "127.0.0.1"


def test_trusted_proxies_are_read_as_cidrs_and_a_bad_one_names_the_variable() -> None:
    settings = Settings.from_env({"CORTEX_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32"})
    assert [str(n) for n in settings.trusted_proxies] == ["10.0.0.0/8", "2001:db8::/32"]

    with pytest.raises(ValueError, match="CORTEX_TRUSTED_PROXIES"):
        Settings.from_env({"CORTEX_TRUSTED_PROXIES": "10.0.0.0/8,envoy"})


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_parallel_sign_ups_from_one_address_under_the_limit_all_succeed(
    tmp_path: Path, backend: str
) -> None:
    # A fresh address per run (set by a trusted proxy), so the shared Redis key
    # ``cortex:throttle:register:<address>`` is this test's own; deleted afterwards.
    # Normalised as the server reads it (no leading zeros), so the key deleted is the one used.
    sign_up_from = str(
        ipaddress.ip_address(f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}")
    )
    trusted = Settings.from_env({"CORTEX_TRUSTED_PROXIES": "127.0.0.1/32,::1"}).trusted_proxies
    extra: dict[str, object] = {}
    redis_url = ""
    if backend == "redis":
        redis_url = require_env("CORTEX_TEST_REDIS_URL")
        extra["redis_url"] = redis_url
    try:
        async with running_app(
            tmp_path, trusted_proxies=trusted, register_address_attempts=1000, **extra
        ) as running:
            client = Client(running.address)
            try:
                outcomes = await asyncio.gather(
                    *(
                        _code(
                            client.auth.Register(
                                auth_pb.RegisterRequest(
                                    email=f"user-{uuid.uuid4().hex[:10]}@example.com",
                                    password=PASSWORD,
                                    display_name="Test User",
                                ),
                                metadata=(("x-forwarded-for", sign_up_from),),
                                timeout=60,
                            )
                        )
                        for _ in range(60)
                    )
                )
            finally:
                await client.close()
    finally:
        if redis_url:
            redis = Redis.from_url(redis_url)
            try:
                await redis.delete(f"cortex:throttle:{register_key(sign_up_from)}")
            finally:
                await redis.aclose()

    assert outcomes == [(grpc.StatusCode.OK, "")] * 60
