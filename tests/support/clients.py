"""A small typed-enough client for tests: one channel, every Cortex stub, a token."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import grpc.aio
from cortex.auth.v1 import auth_service_pb2 as auth_pb
from cortex.auth.v1 import auth_service_pb2_grpc as auth_grpc
from cortex.sessions.v1 import session_service_pb2 as session_pb
from cortex.sessions.v1 import session_service_pb2_grpc as session_grpc
from cortex.sessions.v1 import workspace_service_pb2 as workspace_pb
from cortex.sessions.v1 import workspace_service_pb2_grpc as workspace_grpc

PASSWORD = "correct horse battery staple 42"


@dataclasses.dataclass
class Account:
    email: str
    password: str
    user: str
    access_token: str
    refresh_token: str
    session: str

    def metadata(self, token: str | None = None) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token or self.access_token}")]


class Client:
    def __init__(self, address: str, user_agent: str = "cortex-tests/1.0") -> None:
        self.channel = grpc.aio.insecure_channel(
            address, options=[("grpc.primary_user_agent", user_agent)]
        )
        self.auth = auth_grpc.AuthServiceStub(self.channel)
        self.sessions = session_grpc.SessionServiceStub(self.channel)
        self.workspaces = workspace_grpc.WorkspaceServiceStub(self.channel)

    async def close(self) -> None:
        await self.channel.close()

    async def register(
        self,
        email: str | None = None,
        password: str = PASSWORD,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Account:
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        response = await self.auth.Register(
            auth_pb.RegisterRequest(email=email, password=password, display_name="Test User"),
            metadata=tuple(metadata),
            timeout=30,
        )
        return Account(
            email=email,
            password=password,
            user=response.user.name,
            access_token=response.access_token,
            refresh_token=response.refresh_token,
            session=response.session,
        )

    async def login(self, account: Account) -> Account:
        response = await self.auth.Login(
            auth_pb.LoginRequest(email=account.email, password=account.password), timeout=30
        )
        return dataclasses.replace(
            account,
            access_token=response.access_token,
            refresh_token=response.refresh_token,
            session=response.session,
        )

    async def me(self, account: Account, token: str | None = None) -> Any:
        return await self.auth.GetCurrentUser(
            auth_pb.GetCurrentUserRequest(), metadata=account.metadata(token), timeout=10
        )

    async def first_workspace(self, account: Account) -> Any:
        response = await self.workspaces.ListWorkspaces(
            workspace_pb.ListWorkspacesRequest(), metadata=account.metadata(), timeout=10
        )
        return response.workspaces[0]


__all__ = ["PASSWORD", "Account", "Client", "auth_pb", "session_pb", "workspace_pb"]


class _Bearer:
    """Adds ``authorization: Bearer …`` to a call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or []), self._header])


class _UnaryBearer(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamBearer(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    # grpc.aio files an interceptor under the first kind it is, so each kind
    # needs an object of its own.
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def authenticated_channel(address: str, token: str) -> grpc.aio.Channel:
    """A channel whose every unary and server-streaming call carries ``token``."""
    return grpc.aio.insecure_channel(
        address, interceptors=[_UnaryBearer(token), _StreamBearer(token)]
    )
