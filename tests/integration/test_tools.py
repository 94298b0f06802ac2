"""ToolService over a real server, with real MCP servers (stdio and Streamable HTTP).

The MCP servers are ``support.mcp_servers``, built with the SDK's server side: Cortex
starts the stdio one itself, the HTTP one runs in a process of its own. Every test
runs on SQLite, and on PostgreSQL with Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import grpc.aio
import pytest
from cortex.experts.v1 import tool_service_pb2 as pb
from cortex.experts.v1.tool_service_pb2_grpc import ToolServiceStub
from google.protobuf import json_format, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.clients import Account, Client, workspace_pb
from support.databases import database_url, require_env
from support.inprocess import running_app
from support.mcp import HttpServer, config, http_server, recorded, stdio_table
from support.rpc import details

from cortex_core.server import RunningServer

SERVING = health_pb2.HealthCheckResponse.SERVING
TOOLS_REDIS_DB = 11
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(params=["sqlite", "postgresql+redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """Settings for a fresh database: SQLite alone, or PostgreSQL with Redis."""
    kind = "sqlite" if request.param == "sqlite" else "postgresql"
    async with database_url(kind, tmp_path) as url:
        extra: dict[str, Any] = {"database_url": url}
        if kind == "postgresql":
            # Sign-up limits live in Redis, per client address (127.0.0.1 for every test
            # on this machine, whoever runs it): a database of its own, and no limit.
            shared = urlsplit(require_env("CORTEX_TEST_REDIS_URL"))
            extra["redis_url"] = urlunsplit(shared._replace(path=f"/{TOOLS_REDIS_DB}"))
            extra["register_address_attempts"] = 1_000_000
        yield extra


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


class User:
    """A signed-in account with its first workspace and the tool stub."""

    def __init__(self, client: Client, account: Account, workspace: str) -> None:
        self.client = client
        self.account = account
        self.workspace = workspace
        self.tools = ToolServiceStub(client.channel)

    async def invoke(
        self, tool: str, arguments: dict[str, Any] | None = None, *, workspace: str = "",
        deadline: float = 30,
    ) -> pb.InvokeToolResponse:  # fmt: skip
        request = pb.InvokeToolRequest(
            name=f"tools/{tool}",
            workspace=workspace or self.workspace,
            input=struct(arguments or {}),
        )
        return await self.tools.InvokeTool(
            request, metadata=self.account.metadata(), timeout=deadline
        )

    async def output(self, tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.invoke(tool, arguments)
        assert not response.HasField("error"), response.error
        return json_format.MessageToDict(response.output)

    async def list(self, **fields: Any) -> pb.ListToolsResponse:
        return await self.tools.ListTools(
            pb.ListToolsRequest(**fields), metadata=self.account.metadata(), timeout=10
        )

    async def names(self) -> list[str]:
        found, token = [], ""
        while True:
            page = await self.list(page_size=3, page_token=token)
            found += [tool.name for tool in page.tools]
            token = page.next_page_token
            if not token:
                return found


async def sign_up(running: RunningServer) -> User:
    client = Client(running.address)
    account = await client.register()
    workspace = await client.first_workspace(account)
    return User(client, account, workspace.name)


async def health(running: RunningServer, service: str) -> int:
    async with grpc.aio.insecure_channel(running.address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(response.status)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.05)


async def until_serving(running: RunningServer, server: str) -> None:
    async def serving() -> bool:
        return await health(running, f"cortex.tools.{server}") == SERVING

    await eventually(serving)


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "mcp-record.txt"


@pytest.fixture
async def http(record: Path) -> AsyncIterator[HttpServer]:
    with http_server(record) as server:
        yield server


@pytest.fixture
async def cortex(
    tmp_path: Path, backend: dict[str, Any], record: Path, http: HttpServer
) -> AsyncIterator[RunningServer]:
    """Cortex with the test server twice: `local` over stdio and `remote` over HTTP."""
    servers = config(
        local=stdio_table(
            record,
            tmp_path / "local.pid",
            timeout=5,
            tool_timeouts={"slow": 60},
            require_approval=["fail"],
            idempotent=["echo"],
        ),
        remote={
            "url": f"http://127.0.0.1:{http.port}/mcp",
            "timeout": 5,
            "tool_timeouts": {"slow": 60},
        },
    )
    async with running_app(tmp_path / "cortex", mcp_config=servers, **backend) as running:
        await until_serving(running, "local")
        await until_serving(running, "remote")
        yield running


# --- listing and invoking -----------------------------------------------------------------


async def test_tools_of_every_server_and_the_built_ins_are_listed_by_name_page_by_page(
    cortex: RunningServer,
) -> None:
    user = await sign_up(cortex)
    names = await user.names()
    assert names == sorted(names)
    assert {
        "tools/cortex.current_time",
        "tools/cortex.remember",
        "tools/cortex.search_memories",
    } <= set(names)
    for server in ("local", "remote"):
        assert {f"tools/{server}.echo", f"tools/{server}.slow", f"tools/{server}.fail"} <= set(
            names
        )
    (echo,) = [t for t in (await user.list(page_size=1000)).tools if t.name == "tools/local.echo"]
    assert echo.server == "local"
    assert echo.timeout.seconds == 5
    assert json_format.MessageToDict(echo.input_schema)["required"] == ["text"]
    assert json_format.MessageToDict(echo.output_schema)["properties"]["text"]["type"] == "string"
    assert not echo.requires_approval
    listed = {t.name: t for t in (await user.list(page_size=1000)).tools}
    assert listed["tools/local.echo"].idempotent  # configured
    assert not listed["tools/remote.echo"].idempotent
    assert listed["tools/remote.plain"].idempotent  # the server's readOnlyHint
    assert listed["tools/local.fail"].requires_approval
    assert not listed["tools/remote.fail"].requires_approval
    assert listed["tools/local.slow"].timeout.seconds == 60
    assert listed["tools/cortex.current_time"].server == "cortex"
    assert listed["tools/cortex.current_time"].idempotent
    assert not listed["tools/cortex.remember"].idempotent


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_a_tool_runs_on_its_mcp_server_and_its_structured_output_comes_back(
    cortex: RunningServer, server: str
) -> None:
    user = await sign_up(cortex)
    assert await user.output(f"{server}.echo", {"text": "hello"}) == {"text": "hello"}
    assert await user.output(f"{server}.plain") == {
        "content": [{"type": "text", "text": "just text"}]
    }
    first = await user.output(f"{server}.count")
    second = await user.output(f"{server}.count")
    assert second["calls"] == first["calls"] + 1  # one server process, counting


@pytest.mark.parametrize("server", ["local", "remote", "cortex"])
async def test_input_that_breaks_the_schema_is_invalid_argument_with_a_violation_per_problem(
    cortex: RunningServer, server: str
) -> None:
    user = await sign_up(cortex)
    tool, bad = (
        ("cortex.search_memories", {"query": 3, "limit": 0, "surprise": True})
        if server == "cortex"
        else (f"{server}.echo", {"text": 3, "other": [1]})
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.invoke(tool, bad)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = details(caught.value)["BadRequest"].field_violations
    fields = sorted(v.field for v in violations)
    if server == "cortex":
        assert fields == ["input", "input.limit", "input.query"]  # extra key, range, type
    else:
        assert fields == ["input.text"]  # the SDK's schema does not forbid extra keys
    assert all(v.reason == "SCHEMA_MISMATCH" for v in violations)


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_a_tool_that_fails_answers_with_an_error_status_not_a_failed_rpc(
    cortex: RunningServer, server: str
) -> None:
    user = await sign_up(cortex)
    response = await user.invoke(f"{server}.fail", {"code": "QUOTA", "message": "over\nquota"})
    assert not response.HasField("output")
    assert response.error.message == "over quota"
    (info,) = [d for d in response.error.details if d.type_url.endswith("ErrorInfo")]
    from google.rpc import error_details_pb2

    unpacked = error_details_pb2.ErrorInfo()
    info.Unpack(unpacked)
    assert (unpacked.reason, unpacked.domain) == ("TOOL_FAILED", "cortex")
    assert unpacked.metadata["code"] == "QUOTA"


async def test_a_failing_tools_stack_trace_never_reaches_the_client(cortex: RunningServer) -> None:
    user = await sign_up(cortex)
    leaky = (
        "database is locked\nTraceback (most recent call last):\n"
        '  File "/srv/app/db.py", line 12, in query\n    raise Locked()\nLocked'
    )
    response = await user.invoke("local.fail", {"code": "LOCKED", "message": leaky})
    assert response.error.message == "database is locked"
    js = "boom: ECONNRESET\n    at Socket.onend (node:net:1:1)\n    at emit (node:events:2:2)"
    response = await user.invoke("remote.fail", {"message": js})
    assert response.error.message == "boom: ECONNRESET"


async def test_unknown_tools_and_malformed_names_are_refused(cortex: RunningServer) -> None:
    user = await sign_up(cortex)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.invoke("local.nope")
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert details(caught.value)["ErrorInfo"].reason == "TOOL_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.tools.InvokeTool(
            pb.InvokeToolRequest(name="echo", workspace=user.workspace),
            metadata=user.account.metadata(),
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["BadRequest"].field_violations[0].field == "name"


# --- tenancy ------------------------------------------------------------------------------------


async def test_invoking_needs_editor_and_another_tenants_workspace_is_not_found(
    cortex: RunningServer,
) -> None:
    owner = await sign_up(cortex)
    stranger = await sign_up(cortex)
    for tool in ("local.count", "cortex.current_time"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stranger.invoke(tool, workspace=owner.workspace)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert details(caught.value)["ErrorInfo"].reason == "WORKSPACE_NOT_FOUND"
    await owner.client.workspaces.AddWorkspaceMember(
        workspace_pb.AddWorkspaceMemberRequest(
            parent=owner.workspace,
            email=stranger.account.email,
            role=3,  # viewer
        ),
        metadata=owner.account.metadata(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stranger.invoke("cortex.current_time", workspace=owner.workspace)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert details(caught.value)["ErrorInfo"].reason == "EDITOR_REQUIRED"


async def test_built_in_tools_act_as_the_caller_in_the_workspace(cortex: RunningServer) -> None:
    user = await sign_up(cortex)
    other = await sign_up(cortex)
    created = await user.output("cortex.remember", {"content": "The office plant is a fern."})
    assert created["memory"]["kind"] == "fact"
    assert created["memory"]["name"].startswith(user.workspace + "/memories/")
    found = await user.output("cortex.search_memories", {"query": "plant", "limit": 3})
    assert [m["content"] for m in found["memories"]] == ["The office plant is a fern."]
    assert (await other.output("cortex.search_memories", {"query": "plant"}))["memories"] == []
    now = await user.output("cortex.current_time", {"timezone": "Europe/Paris"})
    assert now["timezone"] == "Europe/Paris"
    assert now["time"][-6:] in ("+01:00", "+02:00")
    response = await user.invoke("cortex.current_time", {"timezone": "Mars/Olympus"})
    assert response.HasField("error")


# --- health -------------------------------------------------------------------------------------


async def test_health_names_each_mcp_server_and_the_tool_service_serves(
    cortex: RunningServer,
) -> None:
    assert await health(cortex, "cortex.experts.v1.ToolService") == SERVING
    assert await health(cortex, "cortex.tools.local") == SERVING
    assert await health(cortex, "cortex.tools.remote") == SERVING


# --- failures of the MCP server -----------------------------------------------------------


async def test_a_stdio_server_killed_mid_call_is_unavailable_then_back_after_its_restart(
    cortex: RunningServer, tmp_path: Path
) -> None:
    user = await sign_up(cortex)
    call = asyncio.create_task(user.invoke("local.slow", {"seconds": 30, "marker": "k"}))
    pid_file = tmp_path / "local.pid"
    await eventually(lambda: _async(pid_file.exists()))
    killed = pid_file.read_text()
    os.kill(int(killed), signal.SIGKILL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call, 10)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(caught.value)["ErrorInfo"].reason == "TOOL_UNAVAILABLE"
    assert "RetryInfo" in details(caught.value)
    # The supervisor starts it again, with backoff; health follows.
    await eventually(lambda: _async(pid_file.read_text() != killed))
    await until_serving(cortex, "local")
    assert await user.output("local.echo", {"text": "back"}) == {"text": "back"}


async def test_an_http_server_that_dies_is_unavailable_then_back_when_it_returns(
    cortex: RunningServer, http: HttpServer
) -> None:
    user = await sign_up(cortex)
    call = asyncio.create_task(user.invoke("remote.slow", {"seconds": 30, "marker": "h"}))
    await eventually(lambda: _async("started h" in recorded(http.record)))
    http.kill()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call, 10)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE

    async def down() -> bool:
        return await health(cortex, "cortex.tools.remote") == NOT_SERVING

    await eventually(down)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.invoke("remote.echo", {"text": "x"})
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(caught.value)["RetryInfo"].retry_delay.ToTimedelta().total_seconds() >= 0
    http.start()
    await until_serving(cortex, "remote")
    assert await user.output("remote.echo", {"text": "back"}) == {"text": "back"}


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_a_hung_server_is_deadline_exceeded_within_the_tools_timeout(
    cortex: RunningServer, server: str
) -> None:
    user = await sign_up(cortex)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.invoke(f"{server}.hang", {"seconds": 8})
    elapsed = time.monotonic() - started
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert details(caught.value)["ErrorInfo"].reason == "TOOL_TIMEOUT"
    assert 4.5 < elapsed < 5 + 3  # the tool's 5 s, plus at most the wait for the cancel to go out


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_the_calls_own_deadline_is_honoured(
    cortex: RunningServer, server: str, record: Path
) -> None:
    user = await sign_up(cortex)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await user.invoke(f"{server}.slow", {"seconds": 20, "marker": f"d-{server}"}, deadline=1.0)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    await eventually(lambda: _async(f"cancelled d-{server}" in recorded(record)), 10)


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_cancelling_the_call_cancels_the_tool_on_the_mcp_server(
    cortex: RunningServer, server: str, record: Path
) -> None:
    user = await sign_up(cortex)
    marker = f"c-{server}"
    call = user.tools.InvokeTool(
        pb.InvokeToolRequest(
            name=f"tools/{server}.slow", workspace=user.workspace,
            input=struct({"seconds": 20, "marker": marker}),
        ),
        metadata=user.account.metadata(),
    )  # fmt: skip
    await eventually(lambda: _async(f"started {marker}" in recorded(record)))
    call.cancel()
    await eventually(lambda: _async(f"cancelled {marker}" in recorded(record)), 10)
    assert f"finished {marker}" not in recorded(record)
    assert await user.output(f"{server}.echo", {"text": "still fine"}) == {"text": "still fine"}


@pytest.mark.parametrize("server", ["local", "remote"])
async def test_a_server_that_changes_its_tools_is_listed_anew(
    cortex: RunningServer, server: str
) -> None:
    user = await sign_up(cortex)
    assert f"tools/{server}.added" not in await user.names()
    await user.output(f"{server}.change_tools")

    async def listed() -> bool:
        return f"tools/{server}.added" in await user.names()

    await eventually(listed, 10)
    assert await user.output(f"{server}.added") == {"result": "added"}


async def _async(value: bool) -> bool:
    return value
