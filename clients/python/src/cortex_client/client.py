"""``CortexClient``: one channel to Cortex that signs in and keeps its token fresh."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex_client.auth import TokenAuth, Tokens
from cortex_client.errors import rich_errors


class CortexClient:
    """A ``grpc.aio`` channel whose calls carry the signed-in user's access token.

    Build any generated stub on ``client.channel``. ``credentials`` makes it a TLS channel;
    ``tokens`` resumes a stored sign-in (its refresh token is enough). Sign-in methods
    raise ``CortexError``. Use as ``async with CortexClient(target) as client:``.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        options: Sequence[tuple[str, Any]] | None = None,
        tokens: Tokens | None = None,
        on_tokens: Callable[[Tokens], None] | None = None,
        refresh_margin: float = 30.0,
    ) -> None:
        self.auth = TokenAuth(tokens, on_tokens=on_tokens, refresh_margin=refresh_margin)
        interceptors = self.auth.interceptors()
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(target, options, interceptors=interceptors)
        else:
            self.channel = grpc.aio.secure_channel(
                target, credentials, options, interceptors=interceptors
            )
        self.auth.bind(self.channel)
        self._auth_stub = auth_service_pb2_grpc.AuthServiceStub(self.channel)

    async def register(
        self, email: str, password: str, display_name: str, *, call_timeout: float = 30.0
    ) -> auth_service_pb2.RegisterResponse:
        """Create an account and sign in as it."""
        request = auth_service_pb2.RegisterRequest(
            email=email, password=password, display_name=display_name
        )
        with rich_errors():
            response = await self._auth_stub.Register(request, timeout=call_timeout)
        self.auth.set_tokens(Tokens.from_response(response))
        return response

    async def login(
        self, email: str, password: str, *, call_timeout: float = 30.0
    ) -> auth_service_pb2.LoginResponse:
        """Sign in; every later call carries the session's access token."""
        request = auth_service_pb2.LoginRequest(email=email, password=password)
        with rich_errors():
            response = await self._auth_stub.Login(request, timeout=call_timeout)
        self.auth.set_tokens(Tokens.from_response(response))
        return response

    async def logout(self, *, call_timeout: float = 30.0) -> None:
        """End the session on the server and forget its tokens."""
        with rich_errors():
            await self._auth_stub.Logout(auth_service_pb2.LogoutRequest(), timeout=call_timeout)
        self.auth.set_tokens(None)

    async def close(self) -> None:
        await self.channel.close(None)

    async def __aenter__(self) -> CortexClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
