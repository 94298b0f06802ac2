"""Proves the generated grpcio stubs make real, authenticated gRPC round trips.

Through ``auth_service_pb2_grpc.AuthServiceStub`` and
``workspace_service_pb2_grpc.WorkspaceServiceStub`` on a ``grpc.aio`` channel:

1. ``cortex.auth.v1.AuthService/GetCurrentUser`` without a token, printing
   ``anonymous=<CODE_NAME>`` (UNAUTHENTICATED expected);
2. ``AuthService/Register`` with the given email;
3. ``AuthService/GetCurrentUser`` with ``authorization: Bearer <access token>``,
   printing ``email=<user.email>``;
4. ``cortex.sessions.v1.WorkspaceService/ListWorkspaces`` with the same token,
   printing ``workspaces=<count>`` and ``role=<caller_role of the first>``.

Usage: PYTHONPATH=clients/python/src python tests/clients/python/client.py HOST:PORT EMAIL
(the project venv has the cortex-core-client distribution installed).

Exit status: 0 when every call succeeded, 1 on usage errors, 2 when no round
trip happened (connection refused, timeout), 3 when an RPC failed (after
printing ``status=<CODE_NAME>``).
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.sessions.v1 import (
    workspace_pb2,
    workspace_service_pb2,
    workspace_service_pb2_grpc,
)

PASSWORD = "correct horse battery staple 42"
DISPLAY_NAME = "Python Client"
TIMEOUT = 10


class NoRoundTripError(Exception):
    """The server never answered."""


async def round_trips(address: str, email: str) -> None:
    """Runs the calls, printing one ``key=value`` line per result."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=TIMEOUT)
        except TimeoutError as error:
            raise NoRoundTripError(f"{address} not ready within {TIMEOUT}s") from error
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        workspaces = workspace_service_pb2_grpc.WorkspaceServiceStub(channel)

        try:
            await auth.GetCurrentUser(auth_service_pb2.GetCurrentUserRequest(), timeout=TIMEOUT)
            anonymous = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            anonymous = error.code()
        if anonymous == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise NoRoundTripError("deadline exceeded")
        print(f"anonymous={anonymous.name}")

        registered = await auth.Register(
            auth_service_pb2.RegisterRequest(
                email=email, password=PASSWORD, display_name=DISPLAY_NAME
            ),
            timeout=TIMEOUT,
        )
        metadata = (("authorization", f"Bearer {registered.access_token}"),)

        current = await auth.GetCurrentUser(
            auth_service_pb2.GetCurrentUserRequest(), timeout=TIMEOUT, metadata=metadata
        )
        print(f"email={current.user.email}")

        listed = await workspaces.ListWorkspaces(
            workspace_service_pb2.ListWorkspacesRequest(page_size=10),
            timeout=TIMEOUT,
            metadata=metadata,
        )
        print(f"workspaces={len(listed.workspaces)}")
        if listed.workspaces:
            role = workspace_pb2.WorkspaceRole.Name(listed.workspaces[0].caller_role)
            print(f"role={role}")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: client.py HOST:PORT EMAIL", file=sys.stderr)
        return 1
    try:
        asyncio.run(round_trips(argv[1], argv[2]))
    except NoRoundTripError as error:
        print(f"no round trip: {error}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            print("no round trip: deadline exceeded", file=sys.stderr)
            return 2
        print(f"status={error.code().name}")
        print(f"{error.code().name}: {error.details()}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
