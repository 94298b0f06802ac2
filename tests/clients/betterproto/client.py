"""Proves the generated betterproto stubs make real, authenticated gRPC round trips.

Through ``AuthServiceStub`` and ``WorkspaceServiceStub`` on a grpclib channel:

1. ``cortex.auth.v1.AuthService/GetCurrentUser`` without a token, printing
   ``anonymous=<CODE_NAME>`` (UNAUTHENTICATED expected);
2. ``AuthService/Register`` with the given email;
3. ``AuthService/GetCurrentUser`` with ``authorization: Bearer <access token>``,
   printing ``email=<user.email>``;
4. ``cortex.sessions.v1.WorkspaceService/ListWorkspaces`` with the same token,
   printing ``workspaces=<count>`` and ``role=<caller_role of the first>``.

Usage: PYTHONPATH=generated/betterproto python tests/clients/betterproto/client.py HOST:PORT EMAIL

Exit status: 0 when every call succeeded, 1 on usage errors, 2 when no round
trip happened (connection refused, timeout), 3 when an RPC failed (after
printing ``status=<CODE_NAME>``).
"""

from __future__ import annotations

import asyncio
import sys

from cortex_betterproto.cortex.auth.v1 import (
    AuthServiceStub,
    GetCurrentUserRequest,
    RegisterRequest,
)
from cortex_betterproto.cortex.sessions.v1 import ListWorkspacesRequest, WorkspaceServiceStub
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

PASSWORD = "correct horse battery staple 42"
DISPLAY_NAME = "Betterproto Client"
TIMEOUT = 10
# betterproto strips the enum's shared prefix from member names (OWNER).
ROLE_PREFIX = "WORKSPACE_ROLE_"


async def round_trips(host: str, port: int, email: str) -> None:
    """Runs the calls, printing one ``key=value`` line per result."""
    channel = Channel(host, port)
    try:
        auth = AuthServiceStub(channel)
        workspaces = WorkspaceServiceStub(channel)

        try:
            await auth.get_current_user(GetCurrentUserRequest(), timeout=TIMEOUT)
            anonymous = Status.OK
        except GRPCError as error:
            anonymous = error.status
        print(f"anonymous={anonymous.name}")

        registered = await auth.register(
            RegisterRequest(email=email, password=PASSWORD, display_name=DISPLAY_NAME),
            timeout=TIMEOUT,
        )
        metadata = {"authorization": f"Bearer {registered.access_token}"}

        current = await auth.get_current_user(
            GetCurrentUserRequest(), timeout=TIMEOUT, metadata=metadata
        )
        print(f"email={current.user.email}")

        listed = await workspaces.list_workspaces(
            ListWorkspacesRequest(page_size=10), timeout=TIMEOUT, metadata=metadata
        )
        print(f"workspaces={len(listed.workspaces)}")
        if listed.workspaces:
            print(f"role={ROLE_PREFIX}{listed.workspaces[0].caller_role.name}")
    finally:
        channel.close()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or ":" not in argv[1]:
        print("usage: client.py HOST:PORT EMAIL", file=sys.stderr)
        return 1
    host, _, port = argv[1].rpartition(":")
    try:
        asyncio.run(round_trips(host, int(port), argv[2]))
    except GRPCError as error:
        print(f"status={error.status.name}")
        print(f"{error.status.name}: {error.message}", file=sys.stderr)
        return 3
    except (TimeoutError, OSError) as error:
        print(f"no round trip: {error!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
