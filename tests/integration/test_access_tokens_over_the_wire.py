"""The auth interceptor refuses every bad token with UNAUTHENTICATED and one message."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import jwt
import pytest
from support.clients import Account, Client, auth_pb
from support.inprocess import TEST_JWT_SECRET, running_app
from support.rpc import details

from cortex_core.adapters.clock import ManualClock
from cortex_core.adapters.security.keys import key_id

SECRET = TEST_JWT_SECRET.encode()
KID = key_id(SECRET)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Client, Account, ManualClock]]:
    clock = ManualClock(start=None)
    async with running_app(tmp_path, clock=clock) as running:
        client = Client(running.address)
        try:
            yield client, await client.register(), clock
        finally:
            await client.close()


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(account: Account, clock: ManualClock, **changes: object) -> dict[str, object]:
    now = int(clock.now().timestamp())
    user_id = account.user.split("/")[1]
    session_id = account.session.split("/")[-1]
    claims: dict[str, object] = {
        "iss": "cortex-core",
        "aud": "cortex-core",
        "sub": user_id,
        "sid": session_id,
        "iat": now,
        "exp": now + 600,
        "jti": "j1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(claims: dict[str, object], *, key: bytes = SECRET, **header: object) -> str:
    headers: dict[str, object] = {"kid": KID, "typ": "at+jwt"}
    headers.update(header)
    algorithm = str(headers.pop("alg", "HS256"))
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _forgeries(account: Account, clock: ManualClock) -> dict[str, str | None]:
    good = _claims(account, clock)
    real = account.access_token
    head, _body, signature = real.split(".")
    return {
        "missing": None,
        "garbage": "not-a-jwt",
        "alg none": f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': KID})}.{_b64(good)}.",
        "HS512": _sign(good, alg="HS512"),
        "wrong key": _sign(good, key=b"k" * 48),
        "tampered": f"{head}.{_b64({**good, 'sub': 'someone-else'})}.{signature}",
        "wrong audience": _sign(_claims(account, clock, aud="another-service")),
        "wrong issuer": _sign(_claims(account, clock, iss="https://evil.example")),
        "no session": _sign(_claims(account, clock, sid=None)),
        "no jti": _sign(_claims(account, clock, jti=None)),
        "refresh token as access": account.refresh_token,
        "refresh typ": _sign(good, typ="refresh+jwt"),
        "unknown kid": _sign(good, kid="0000000000000000"),
        "expired": _sign(_claims(account, clock, iat=1, exp=2)),
    }


async def test_every_forged_or_broken_token_is_unauthenticated_with_one_message(
    env: tuple[Client, Account, ManualClock],
) -> None:
    client, account, clock = env
    await client.me(account)  # the genuine token works
    messages = set()
    for label, token in _forgeries(account, clock).items():
        metadata = [] if token is None else [("authorization", f"Bearer {token}")]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await client.auth.GetCurrentUser(auth_pb.GetCurrentUserRequest(), metadata=metadata)
        error = caught.value
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, label
        assert details(error)["ErrorInfo"].domain == "cortex", label
        messages.add(error.details())
    assert len(messages) == 1


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "bearer  ", "Token abc"])
async def test_malformed_authorization_headers_are_unauthenticated(
    env: tuple[Client, Account, ManualClock], header: str
) -> None:
    client, _, _ = env
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.auth.GetCurrentUser(
            auth_pb.GetCurrentUserRequest(), metadata=[("authorization", header)]
        )
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_an_access_token_stops_working_when_it_expires(
    env: tuple[Client, Account, ManualClock],
) -> None:
    client, account, clock = env
    await client.me(account)
    clock.advance(15 * 60 + 10)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.me(account)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(caught.value)["ErrorInfo"].reason == "TOKEN_EXPIRED"


async def test_tokens_survive_a_restart_with_the_generated_secret(tmp_path: Path) -> None:
    async with running_app(tmp_path, jwt_secret="") as first:
        client = Client(first.address)
        account = await client.register()
        await client.close()
    secret_file = tmp_path / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    async with running_app(tmp_path, jwt_secret="") as second:
        client = Client(second.address)
        try:
            assert (await client.me(account)).user.email == account.email
        finally:
            await client.close()


async def test_a_revocation_on_one_replica_takes_effect_on_another_within_a_second(
    tmp_path: Path,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    async with (
        running_app(tmp_path / "a", database_url=url) as replica_a,
        running_app(tmp_path / "b", database_url=url) as replica_b,
    ):
        a, b = Client(replica_a.address), Client(replica_b.address)
        try:
            account = await a.register()
            await b.me(account)  # replica B has the session cached as active
            await a.auth.Logout(auth_pb.LogoutRequest(), metadata=account.metadata())
            revoked_at = time.monotonic()
            code = None
            while code is None and time.monotonic() - revoked_at < 1.5:
                try:
                    await b.me(account)
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                await asyncio.sleep(0.05)
            assert code is grpc.StatusCode.UNAUTHENTICATED, "still accepted after 1.5 s"
        finally:
            await a.close()
            await b.close()
