"""Accounts, tokens and sessions over a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from support.clients import PASSWORD, Account, Client, auth_pb, session_pb
from support.inprocess import running_app
from support.rpc import details

from cortex_core.adapters.clock import ManualClock


@dataclass
class Server:
    address: str
    clock: ManualClock
    client: Client


@pytest.fixture
async def server(db_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    clock = ManualClock()
    async with running_app(tmp_path, clock=clock, database_url=db_url) as running:
        client = Client(running.address)
        try:
            yield Server(running.address, clock, client)
        finally:
            await client.close()


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def _status_bytes(error: grpc.aio.AioRpcError) -> bytes:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return bytes(value)
    return b""


async def test_register_signs_in_and_creates_a_personal_workspace(server: Server) -> None:
    account = await server.client.register("Ada@Example.com")
    me = await server.client.me(account)
    assert me.user.email == "Ada@Example.com"
    assert me.user.name == account.user
    assert account.session.startswith(f"{account.user}/sessions/")
    workspace = await server.client.first_workspace(account)
    assert workspace.caller_role == 1  # WORKSPACE_ROLE_OWNER


async def test_an_email_is_taken_whatever_its_case(server: Server) -> None:
    await server.client.register("grace@example.com")
    error = await _error(server.client.register("GRACE@example.com"))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS
    assert details(error)["ErrorInfo"].reason == "EMAIL_TAKEN"


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short7!", "PASSWORD_TOO_SHORT"), ("password123", "PASSWORD_TOO_COMMON")],
)
async def test_weak_passwords_are_refused_with_a_field_violation(
    server: Server, password: str, reason: str
) -> None:
    error = await _error(server.client.register(password=password))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations
    assert {v.field for v in violations} == {"password"}
    assert reason in {v.reason for v in violations}


async def test_a_long_passphrase_is_used_whole(server: Server) -> None:
    passphrase = "the quick brown fox jumps over the lazy dog " * 5
    account = await server.client.register(password=passphrase)
    await server.client.login(account)
    truncated = Account(**{**account.__dict__, "password": passphrase[:-1]})
    error = await _error(server.client.login(truncated))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_email_and_wrong_password_fail_identically(server: Server) -> None:
    account = await server.client.register()
    wrong = await _error(
        server.client.auth.Login(auth_pb.LoginRequest(email=account.email, password="nope-nope-1"))
    )
    unknown = await _error(
        server.client.auth.Login(
            auth_pb.LoginRequest(email="nobody@example.com", password="nope-nope-1")
        )
    )
    assert wrong.code() is unknown.code() is grpc.StatusCode.UNAUTHENTICATED
    assert wrong.details() == unknown.details()
    assert _status_bytes(wrong) == _status_bytes(unknown)


async def test_refresh_rotates_and_a_reused_token_revokes_the_session(server: Server) -> None:
    client = server.client
    account = await client.register()
    first = await client.auth.RefreshToken(
        auth_pb.RefreshTokenRequest(refresh_token=account.refresh_token)
    )
    assert first.refresh_token != account.refresh_token
    assert first.session == account.session
    await client.me(account, first.access_token)

    reuse = await _error(
        client.auth.RefreshToken(auth_pb.RefreshTokenRequest(refresh_token=account.refresh_token))
    )
    assert reuse.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(reuse)["ErrorInfo"].reason == "REFRESH_TOKEN_REUSED"

    # Every token of the session is dead now, including the newest pair.
    after = await _error(
        client.auth.RefreshToken(auth_pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    )
    assert after.code() is grpc.StatusCode.UNAUTHENTICATED
    for token in (account.access_token, first.access_token):
        error = await _error(client.me(account, token))
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert details(error)["ErrorInfo"].reason == "SESSION_REVOKED"


async def test_two_concurrent_refreshes_with_one_token_let_exactly_one_through(
    server: Server,
) -> None:
    account = await server.client.register()
    request = auth_pb.RefreshTokenRequest(refresh_token=account.refresh_token)
    results = await asyncio.gather(
        server.client.auth.RefreshToken(request),
        server.client.auth.RefreshToken(request),
        return_exceptions=True,
    )
    succeeded = [r for r in results if isinstance(r, auth_pb.RefreshTokenResponse)]
    failed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(succeeded) == 1
    assert len(failed) == 1
    assert failed[0].code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_refresh_token_expires_with_its_session(server: Server) -> None:
    account = await server.client.register()
    server.clock.advance(31 * 24 * 3600)
    error = await _error(
        server.client.auth.RefreshToken(
            auth_pb.RefreshTokenRequest(refresh_token=account.refresh_token)
        )
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(error)["ErrorInfo"].reason == "REFRESH_TOKEN_EXPIRED"


async def test_logout_stops_the_access_token_at_once(server: Server) -> None:
    account = await server.client.register()
    await server.client.me(account)
    await server.client.auth.Logout(auth_pb.LogoutRequest(), metadata=account.metadata())
    error = await _error(server.client.me(account))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_changing_the_password_revokes_the_other_sessions(server: Server) -> None:
    client = server.client
    account = await client.register()
    other = await client.login(account)
    new_password = "a brand new passphrase 77"
    response = await client.auth.ChangePassword(
        auth_pb.ChangePasswordRequest(current_password=PASSWORD, new_password=new_password),
        metadata=account.metadata(),
    )
    assert response.revoked_session_count == 1
    await client.me(account)  # the calling session stays
    assert (await _error(client.me(other))).code() is grpc.StatusCode.UNAUTHENTICATED
    assert (await _error(client.login(account))).code() is grpc.StatusCode.UNAUTHENTICATED
    await client.login(Account(**{**account.__dict__, "password": new_password}))


async def test_a_wrong_current_password_changes_nothing(server: Server) -> None:
    account = await server.client.register()
    error = await _error(
        server.client.auth.ChangePassword(
            auth_pb.ChangePasswordRequest(
                current_password="not it at all", new_password="another fine passphrase"
            ),
            metadata=account.metadata(),
        )
    )
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    await server.client.login(account)


async def test_sessions_are_listed_with_client_details_and_can_be_revoked(
    server: Server,
) -> None:
    client = server.client
    account = await client.register()
    laptop = await client.login(account)
    listed = await client.sessions.ListSessions(
        session_pb.ListSessionsRequest(parent="users/-"), metadata=account.metadata()
    )
    names = {s.name for s in listed.sessions}
    assert names == {account.session, laptop.session}
    current = [s for s in listed.sessions if s.current]
    assert [s.name for s in current] == [account.session]
    assert all(s.client_address == "127.0.0.1" for s in listed.sessions)
    assert all("cortex-tests/1.0" in s.user_agent for s in listed.sessions)

    await client.sessions.RevokeSession(
        session_pb.RevokeSessionRequest(name=laptop.session), metadata=account.metadata()
    )
    assert (await _error(client.me(laptop))).code() is grpc.StatusCode.UNAUTHENTICATED
    await client.me(account)


async def test_another_users_sessions_are_out_of_reach(server: Server) -> None:
    client = server.client
    alice = await client.register()
    bob = await client.register()
    error = await _error(
        client.sessions.RevokeSession(
            session_pb.RevokeSessionRequest(name=bob.session), metadata=alice.metadata()
        )
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
    listing = await _error(
        client.sessions.ListSessions(
            session_pb.ListSessionsRequest(parent=bob.user), metadata=alice.metadata()
        )
    )
    assert listing.code() is grpc.StatusCode.PERMISSION_DENIED
    await client.me(bob)


async def test_failed_logins_are_throttled_with_retry_info(server: Server) -> None:
    account = await server.client.register()
    wrong = auth_pb.LoginRequest(email=account.email, password="wrong password here")
    codes = []
    for _ in range(7):
        codes.append((await _error(server.client.auth.Login(wrong))).code())
    assert codes[:5] == [grpc.StatusCode.UNAUTHENTICATED] * 5
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[5:]
    throttled = await _error(server.client.login(account))
    assert throttled.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(throttled)["ErrorInfo"].reason == "LOGIN_THROTTLED"
    assert details(throttled)["RetryInfo"].retry_delay.seconds >= 1
