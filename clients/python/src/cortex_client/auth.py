"""Access tokens attached to every call and refreshed with the rotating refresh token.

``TokenAuth`` is a pair of ``grpc.aio`` client interceptors (unary and server-streaming,
the only shapes Cortex's RPCs have). For every RPC except Register, Login and
RefreshToken it adds ``authorization: Bearer <access token>``. It refreshes:

- before a call, when the access token expires within ``refresh_margin`` seconds;
- after a call fails ``UNAUTHENTICATED`` with reason TOKEN_EXPIRED or TOKEN_INVALID, once,
  then repeats the call with the new token (a stream only when it failed before its first
  message: a frame already delivered is never delivered twice).

Refresh tokens are single-use and presenting one twice revokes the session, so refreshes are
single-flight: concurrent calls that see the same stale token share one RefreshToken, and a
call whose token was already replaced just retries with the new one. The token state is
guarded by a lock, so it may be read (``tokens``) from any thread; the interceptors belong to
the event loop of the channel they were given to. ``on_tokens`` is called with every new
``Tokens`` so a service can persist the rotated refresh token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex_client.errors import CortexError

_AUTH = "/cortex.auth.v1.AuthService/"
PUBLIC_METHODS = frozenset({f"{_AUTH}Register", f"{_AUTH}Login", f"{_AUTH}RefreshToken"})
#: UNAUTHENTICATED reasons a refresh can cure (not SESSION_REVOKED, not INVALID_CREDENTIALS).
REFRESHABLE_REASONS = frozenset({"TOKEN_EXPIRED", "TOKEN_INVALID"})


@dataclass(frozen=True)
class Tokens:
    """One sign-in's tokens. ``access_expires_at`` is seconds since the epoch.

    A stored refresh token alone resumes a sign-in: ``Tokens(refresh_token=saved)`` (the
    first call refreshes, since the empty access token counts as expired).
    """

    access_token: str = ""
    refresh_token: str = ""
    access_expires_at: float = 0.0
    session: str = ""

    @classmethod
    def from_response(cls, response: Any) -> Tokens:
        """From a Register, Login or RefreshToken response."""
        return cls(
            access_token=response.access_token,
            refresh_token=response.refresh_token,
            access_expires_at=response.access_token_expire_time.ToDatetime().timestamp()
            if response.HasField("access_token_expire_time")
            else float("inf"),
            session=response.session,
        )


def _method(details: Any) -> str:
    method = details.method
    return method.decode() if isinstance(method, bytes) else method


def _with_token(details: Any, token: str) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(
        *[(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
    )
    metadata.add("authorization", f"Bearer {token}")
    return grpc.aio.ClientCallDetails(
        details.method,
        details.timeout,
        metadata,
        details.credentials,
        details.wait_for_ready,
    )


def _refreshable(error: grpc.RpcError) -> bool:
    typed = CortexError.from_rpc_error(error)
    return typed.code == grpc.StatusCode.UNAUTHENTICATED and typed.reason in REFRESHABLE_REASONS


class TokenAuth:
    """Holds one session's tokens and signs calls with them (see the module docstring)."""

    def __init__(
        self,
        tokens: Tokens | None = None,
        *,
        on_tokens: Callable[[Tokens], None] | None = None,
        refresh_margin: float = 30.0,
        refresh_timeout: float = 10.0,
    ) -> None:
        self._tokens = tokens
        self._on_tokens = on_tokens
        self._margin = refresh_margin
        self._timeout = refresh_timeout
        self._state = threading.Lock()
        self._refreshing = asyncio.Lock()
        self._stub: auth_service_pb2_grpc.AuthServiceAsyncStub | None = None
        self.refresh_count = 0

    @property
    def tokens(self) -> Tokens | None:
        with self._state:
            return self._tokens

    def set_tokens(self, tokens: Tokens | None) -> None:
        """Adopt a sign-in (or sign out with None); ``on_tokens`` hears of it."""
        with self._state:
            self._tokens = tokens
        if tokens is not None and self._on_tokens is not None:
            self._on_tokens(tokens)

    def bind(self, channel: grpc.aio.Channel) -> None:
        """The channel RefreshToken is sent on (usually the intercepted one itself)."""
        self._stub = auth_service_pb2_grpc.AuthServiceStub(channel)

    def interceptors(self) -> list[Any]:
        """The interceptors to pass to ``grpc.aio.insecure_channel`` / ``secure_channel``."""
        return [_UnaryAuth(self), _StreamAuth(self)]

    async def access_token(self) -> str | None:
        """The token to send now, refreshed first when it is about to expire."""
        tokens = self.tokens
        if tokens is None:
            return None
        if tokens.refresh_token and tokens.access_expires_at - time.time() < self._margin:
            return await self.refresh(rejected=tokens.access_token)
        return tokens.access_token

    async def refresh(self, rejected: str | None = None) -> str:
        """Exchange the refresh token for new tokens; returns the new access token.

        With ``rejected`` (the access token a call was refused with), nothing is sent when
        another task has replaced that token meanwhile. Raises ``CortexError`` when the
        refresh fails (e.g. UNAUTHENTICATED/REFRESH_TOKEN_REUSED: sign in again).
        """
        async with self._refreshing:
            tokens = self.tokens
            if tokens is None or not tokens.refresh_token:
                raise RuntimeError("TokenAuth has no refresh token: sign in first")
            if rejected is not None and tokens.access_token != rejected:
                return tokens.access_token
            if self._stub is None:
                raise RuntimeError("TokenAuth.bind(channel) was not called")
            try:
                response = await self._stub.RefreshToken(
                    auth_service_pb2.RefreshTokenRequest(refresh_token=tokens.refresh_token),
                    timeout=self._timeout,
                )
            except grpc.RpcError as error:
                raise CortexError.from_rpc_error(error) from error
            fresh = Tokens.from_response(response)
            self.refresh_count += 1
            self.set_tokens(fresh)
            return fresh.access_token


class _Signer:
    """What both interceptors share. They are two objects because a grpc.aio channel files
    each interceptor under the first call shape it implements only."""

    def __init__(self, auth: TokenAuth) -> None:
        self._auth = auth

    async def _signed(self, details: grpc.aio.ClientCallDetails) -> tuple[Any, str | None]:
        """The details to send (with the token) and the token, or none for a public RPC."""
        if _method(details) in PUBLIC_METHODS:
            return details, None
        token = await self._auth.access_token()
        return (details, None) if token is None else (_with_token(details, token), token)


class _UnaryAuth(_Signer, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        signed, token = await self._signed(client_call_details)
        call = await continuation(signed, request)
        if token is None:
            return call
        try:
            await call
        except grpc.RpcError as error:
            if not _refreshable(error):
                return call  # awaiting it raises the same error for the caller
            token = await self._auth.refresh(rejected=token)
            return await continuation(_with_token(client_call_details, token), request)
        return call


class _StreamAuth(_Signer, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(  # type: ignore[override]
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        signed, token = await self._signed(client_call_details)
        call = await continuation(signed, request)
        if token is None:
            return call
        return self._frames(call, token, continuation, client_call_details, request)

    async def _frames(
        self,
        call: Any,
        token: str,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> AsyncIterator[Any]:
        received = False
        try:
            try:
                async for frame in call:
                    received = True
                    yield frame
                return
            except grpc.RpcError as error:
                if received or not _refreshable(error):
                    raise
            token = await self._auth.refresh(rejected=token)
            call = await continuation(_with_token(details, token), request)
            async for frame in call:
                yield frame
        finally:
            call.cancel()  # a no-op once the call has ended; frees it when the reader stops
