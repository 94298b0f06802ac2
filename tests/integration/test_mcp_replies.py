"""Tool calls inside streamed replies, over a real server, with real MCP servers.

The model is the local development provider's tool mode (``/call``); the tools are
``support.mcp_servers``, built with the SDK's server side: ``local`` is started by
Cortex over stdio, ``remote`` runs in a process of its own on Streamable HTTP (so it
outlives a Cortex restart and its ``count`` tool proves how often a call ran). The
server's record file proves what it saw (``started``/``cancelled``/``finished``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cortex.context.v1 import message_pb2
from support.clients import Account
from support.databases import database_url
from support.inprocess import running_app
from support.mcp import HttpServer, config, recorded, stdio_table
from test_tool_replies import (
    APPROVE,
    DENY,
    Chat,
    _chat,
    _error_info,
    _kinds,
    _output,
)
from test_tools import _async, eventually, sign_up, until_serving

from cortex_core.server import RunningServer

SERVERS = ("local", "remote")
STOP = message_pb2.FINISH_REASON_STOP


@pytest.fixture
async def on_sqlite(tmp_path: Path, record: Path, http: HttpServer) -> AsyncIterator[RunningServer]:
    """:func:`_cortex` on SQLite."""
    async with (
        database_url("sqlite", tmp_path) as url,
        _cortex(tmp_path, {"database_url": url}, record, http) as running,
    ):
        yield running


@contextlib.asynccontextmanager
async def _cortex(
    tmp_path: Path, storage: dict[str, object], record: Path, http: HttpServer
) -> AsyncIterator[RunningServer]:
    """Cortex with the test MCP server twice: ``local`` (stdio) and ``remote`` (HTTP);
    ``count`` needs approval on ``remote``."""
    servers = config(
        local=stdio_table(record, tmp_path / "local.pid", timeout=5, tool_timeouts={"slow": 60}),
        remote={
            "url": f"http://127.0.0.1:{http.port}/mcp",
            "timeout": 5,
            "tool_timeouts": {"slow": 60},
            "require_approval": ["count"],
        },
    )
    async with running_app(tmp_path / "cortex", mcp_config=servers, **storage) as running:
        for server in SERVERS:
            await until_serving(running, server)
        yield running


@contextlib.asynccontextmanager
async def _conversation(
    running: RunningServer, *tools: str, account: Account | None = None
) -> AsyncIterator[Chat]:
    async with _chat(running.address, account) as chat:
        await chat.create([f"tools/{tool}" for tool in tools])
        yield chat


def _results(frames: list[Any]) -> list[Any]:
    return [f.tool_result for f in frames if f.HasField("tool_result")]


async def _stored_cancelled(chat: Chat) -> list[Any]:
    """The messages once the cancelled reply is stored (it is, after the cancel)."""
    async with asyncio.timeout(10):
        while True:
            stored = await chat.messages()
            if stored[-1].finish_reason == message_pb2.FINISH_REASON_CANCELLED:
                return stored
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("server", SERVERS)
async def test_a_reply_calls_an_mcp_tool_and_quotes_its_output(
    backend: dict[str, object],
    tmp_path: Path,
    record: Path,
    http: HttpServer,
    server: str,
) -> None:
    async with (
        _cortex(tmp_path, backend, record, http) as running,
        _conversation(running, f"{server}.echo") as chat,
    ):
        frames = await chat.send(f'Say it back.\n/call {server}.echo {{"text": "ping"}}')
        stored = await chat.messages()
    kinds = _kinds(frames)
    assert kinds[0] == "user_message"
    assert kinds[-2:] == ["usage", "completion"]
    call_at, result_at = kinds.index("tool_call"), kinds.index("tool_result")
    assert call_at < result_at
    call, (result,) = frames[call_at].tool_call, _results(frames)
    assert call.tool == f"tools/{server}.echo"
    assert result.tool_call_id == call.id
    assert _output(result) == {"text": "ping"}  # the MCP tool's structured output
    completion = frames[-1].completion
    assert completion.finish_reason == STOP
    assert f'{server}.echo -> {{"text":"ping"}}' in completion.message.content
    assert [m.role for m in stored] == [
        message_pb2.MESSAGE_ROLE_USER,
        message_pb2.MESSAGE_ROLE_ASSISTANT,
        message_pb2.MESSAGE_ROLE_TOOL,
        message_pb2.MESSAGE_ROLE_ASSISTANT,
    ]
    assert [c.id for c in stored[1].tool_calls] == [call.id]
    assert _output(stored[2].tool_result) == {"text": "ping"}
    assert stored[3].name == completion.message.name


@pytest.mark.parametrize("server", SERVERS)
async def test_cancelling_a_reply_mid_tool_cancels_the_call_on_the_mcp_server(
    on_sqlite: RunningServer,
    record: Path,
    server: str,
) -> None:
    marker = f"reply-{server}"
    async with _conversation(on_sqlite, f"{server}.slow") as chat:
        call = chat.call(f'/call {server}.slow {{"seconds": 20, "marker": "{marker}"}}')
        await eventually(lambda: _async(f"started {marker}" in recorded(record)))
        call.cancel()
        await eventually(lambda: _async(f"cancelled {marker}" in recorded(record)), 10)
        stored = await _stored_cancelled(chat)
        again = await chat.send("still there?")
    assert f"finished {marker}" not in recorded(record)
    assert stored[-3].tool_calls[0].tool == f"tools/{server}.slow"
    assert _error_info(stored[-2].tool_result.error)["reason"] == "TOOL_CANCELLED"
    assert again[-1].completion.finish_reason == STOP


async def test_an_mcp_server_killed_during_a_replys_call_is_told_to_the_model(
    on_sqlite: RunningServer,
    record: Path,
    tmp_path: Path,
) -> None:
    async with _conversation(on_sqlite, "local.slow") as chat:
        call = chat.call('/call local.slow {"seconds": 20, "marker": "killed"}')
        await eventually(lambda: _async("started killed" in recorded(record)))
        os.kill(int((tmp_path / "local.pid").read_text()), signal.SIGKILL)
        async with asyncio.timeout(15):
            frames = [frame async for frame in call]
    (result,) = _results(frames)
    assert _error_info(result.error)["reason"] == "TOOL_UNAVAILABLE"
    completion = frames[-1].completion
    assert completion.finish_reason == STOP  # the reply completes
    assert "TOOL_UNAVAILABLE" in completion.message.content  # the model was told


@pytest.mark.parametrize("server", SERVERS)
async def test_the_rpc_deadline_stops_an_mcp_tool_in_time_for_the_reply_to_complete(
    on_sqlite: RunningServer,
    record: Path,
    server: str,
) -> None:
    marker = f"deadline-{server}"
    async with _conversation(on_sqlite, f"{server}.slow") as chat:
        call = chat.call(f'/call {server}.slow {{"seconds": 20, "marker": "{marker}"}}', timeout=4)
        frames = [frame async for frame in call]
        await eventually(lambda: _async(f"cancelled {marker}" in recorded(record)), 10)
    (result,) = _results(frames)
    assert _error_info(result.error)["reason"] == "TOOL_TIMEOUT"
    assert frames[-1].completion.finish_reason == STOP
    assert "TOOL_TIMEOUT" in frames[-1].completion.message.content


async def test_approved_and_denied_mcp_calls_after_a_restart_run_once_and_never(
    backend: dict[str, object],
    tmp_path: Path,
    record: Path,
    http: HttpServer,
) -> None:
    async with _cortex(tmp_path, backend, record, http) as running:
        user = await sign_up(running)
        waiting = []
        for _ in ("approved", "denied"):
            async with _conversation(running, "remote.count", account=user.account) as chat:
                frames = await chat.send("/call remote.count {}")
                completion = frames[-1].completion
                assert completion.finish_reason == message_pb2.FINISH_REASON_APPROVAL_REQUIRED
                assert "tool_result" not in _kinds(frames)
                (pending,) = completion.message.tool_calls
                assert pending.state == message_pb2.TOOL_CALL_STATE_PENDING_APPROVAL
                waiting.append((chat.conversation, pending.id))
        await user.client.close()

    async with _cortex(tmp_path, backend, record, http) as running:  # Cortex restarted
        outcomes = []
        for (conversation, call_id), decision in zip(waiting, (APPROVE, DENY), strict=True):
            async with _chat(running.address, user.account) as chat:
                chat.conversation = conversation
                outcomes.append(await chat.send(approvals=[(call_id, decision)]))
        again = await sign_up(running)
        counted = await again.output("remote.count")  # InvokeTool asks no approval
        await again.client.close()
    approved, denied = (_results(frames) for frames in outcomes)
    assert [(r.tool_call_id, _output(r)) for r in approved] == [(waiting[0][1], {"calls": 1})]
    assert [r.tool_call_id for r in denied] == [waiting[1][1]]
    assert _error_info(denied[0].error)["reason"] == "TOOL_DENIED"
    assert counted == {"calls": 2}  # the approved call ran once, the denied one never
    assert all(frames[-1].completion.finish_reason == STOP for frames in outcomes)
    assert '"calls":1' in outcomes[0][-1].completion.message.content
