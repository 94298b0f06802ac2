"""The client packages' README examples run against a real ``cortex-core serve``.

``clients/python/examples/quickstart.py`` (cortex-core-client) and
``clients/go/examples/quickstart`` (the Go module, built offline with ``-mod=vendor`` over
Debian's Go libraries, as clients/go/README.md says) each: sign up, resume the sign-in
from a stored refresh token with five concurrent calls sharing one refresh, read a
BadRequest violation, stream a reply and cancel it, resume an event stream from its token
without a gap, and watch an ``experts/echo`` task to its end. A missing Go toolchain fails
with the command that installs it; nothing is skipped.

``clients/go/examples/follow`` follows a workspace's events with a
``cortexclient.Subscription`` while the server it talks to is stopped and started again:
it prints every conversation created before and after, once each, in order.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cortex.context.v1 import conversation_pb2, conversation_service_pb2
from cortex.context.v1 import conversation_service_pb2_grpc as conversations
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from cortex_client import CortexClient
from support.events import free_port, own_redis
from support.golang import go_build, go_modules_ready, go_vet
from support.servers import cortex_server

REPO = Path(__file__).resolve().parents[2]
GO_MODULES = [REPO / "generated" / "go", REPO / "clients" / "go"]
EXAMPLE_TIMEOUT = 90

EXPECTED = [
    "refreshes=1",
    "workspaces=1",
    "error_reason=INVALID_ARGUMENT",
    "error_field=workspace.display_name",
    "reply_started=true",
    "reply_cancelled=true",
    "events_resumed_in_order=true",
    "task_state=TASK_STATE_SUCCEEDED",
]


@pytest.fixture(scope="module")
def go_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go examples, built offline as the README says; both modules pass go vet."""
    go_modules_ready(*GO_MODULES)
    for module in GO_MODULES:
        go_vet(module)
    build = tmp_path_factory.mktemp("go-examples")
    for example in ("quickstart", "follow"):
        go_build(GO_MODULES[1], f"./examples/{example}", build / example)
    return build


def _python(address: str, request: pytest.FixtureRequest) -> list[str]:
    example = REPO / "clients" / "python" / "examples" / "quickstart.py"
    return [sys.executable, str(example), address]


def _go(address: str, request: pytest.FixtureRequest) -> list[str]:
    built: Path = request.getfixturevalue("go_examples")
    return [str(built / "quickstart"), address]


#: Only the Go example shows the refresh after a rejected token; the Python one is tested in
#: tests/integration/test_client_helpers.py.
EXTRA = {
    "go": ["refreshes_after_rejection=2", "refreshes_after_stream_rejection=3"],
    "python": [],
}


@pytest.mark.parametrize("command", [_python, _go], ids=["python", "go"])
def test_quickstart_example_runs_every_step_against_a_real_server(
    command: object, server_address: str, request: pytest.FixtureRequest
) -> None:
    argv = command(server_address, request)  # type: ignore[operator]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT, cwd=REPO, check=False
    )

    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    for expected in EXPECTED + EXTRA[command.__name__.lstrip("_")]:  # type: ignore[attr-defined]
        assert expected in lines, (expected, lines)


PASSWORD = "correct horse battery staple 42"
_EVENT = re.compile(r"event sequence=(\d+) title=(\S+) reconnects=(\d+)")


async def _create(address: str, email: str, title: str) -> None:
    async with CortexClient(address) as client:
        await client.login(email, PASSWORD)
        workspaces = workspace_service_pb2_grpc.WorkspaceServiceStub(client.channel)
        listed = await workspaces.ListWorkspaces(workspace_service_pb2.ListWorkspacesRequest())
        await conversations.ConversationServiceStub(client.channel).CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                parent=listed.workspaces[0].name,
                conversation=conversation_pb2.Conversation(title=title),
            )
        )


async def test_the_go_subscription_follows_events_across_a_server_restart(
    go_examples: Path, tmp_path: Path
) -> None:
    email = f"follow-{time.time_ns()}@example.com"
    created: list[str] = []
    async with own_redis(tmp_path / "redis") as redis:
        # The same address, data dir (database, JWT secret) and Redis event log both times.
        env = {"CORTEX_GRPC_ADDRESS": f"127.0.0.1:{free_port()}", "CORTEX_REDIS_URL": redis.url}
        with cortex_server(tmp_path / "server", env) as server:
            async with CortexClient(server.address) as client:
                await client.register(email, PASSWORD, "Follower")
            follower = await asyncio.create_subprocess_exec(
                str(go_examples / "follow"),
                server.address,
                "after-restart",
                env={**os.environ, "CORTEX_EMAIL": email, "CORTEX_PASSWORD": PASSWORD},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert follower.stdout is not None
            first = b""
            while not first:  # the stream starts live: create until one arrives
                created.append(f"before-{len(created)}")
                await _create(server.address, email, created[-1])
                try:
                    first = await asyncio.wait_for(follower.stdout.readline(), timeout=0.5)
                except TimeoutError:
                    continue
        with cortex_server(tmp_path / "server", env) as server:
            created.append("after-restart")
            await _create(server.address, email, created[-1])
            rest, errors = await asyncio.wait_for(follower.communicate(), timeout=30)

    assert follower.returncode == 0, errors.decode()
    events = [_EVENT.match(line) for line in (first + rest).decode().splitlines()]
    assert all(events), (first + rest).decode()
    titles = [e.group(2) for e in events if e]
    assert titles == created[created.index(titles[0]) :]
    assert int(events[-1].group(3)) >= 1  # type: ignore[union-attr]
