"""The life of MCP sessions around Cortex's own: start, shutdown, protocol eras.

These do not depend on the storage backend (SQLite here; test_tools.py covers both).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from support.inprocess import running_app
from support.mcp import config, stdio_table
from test_tools import NOT_SERVING, SERVING, _async, eventually, health, sign_up, until_serving


def _mute(pid_file: Path, **keys: object) -> dict[str, object]:
    """A child that never speaks MCP: it only writes its pid and sleeps."""
    code = f"import os,time; open({str(pid_file)!r},'w').write(str(os.getpid())); time.sleep(600)"
    return {"command": sys.executable, "args": ["-c", code], **keys}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_start_does_not_wait_for_a_server_that_never_answers_and_shutdown_stops_it(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "mute.pid"
    mute = _mute(pid_file, connect_timeout=30)
    started = time.monotonic()
    async with running_app(tmp_path / "cortex", mcp_config=config(mute=mute)) as running:
        assert time.monotonic() - started < 15
        await eventually(lambda: _async(_exists(pid_file)))
        pid = int(pid_file.read_text())
        assert await health(running, "cortex.tools.mute") == NOT_SERVING
        assert await health(running, "") == SERVING
        user = await sign_up(running)
        assert await user.output("cortex.current_time")  # the built-ins work meanwhile
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await user.invoke("mute.anything")
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND  # never listed
        await running.drain()
    await eventually(lambda: _async(not _alive(pid)), 10)


async def test_shutdown_closes_stdio_servers_promptly_with_no_process_left(tmp_path: Path) -> None:
    record = tmp_path / "record.txt"
    pid_file = tmp_path / "local.pid"
    servers = config(local=stdio_table(record, pid_file))
    async with running_app(tmp_path / "cortex", mcp_config=servers) as running:
        await until_serving(running, "local")
        pid = int(pid_file.read_text())
        user = await sign_up(running)
        call = asyncio.create_task(user.invoke("local.slow", {"seconds": 30, "marker": "s"}))
        await eventually(lambda: _async(_exists_line(record, "started s")))
        started = time.monotonic()
        await running.drain()
        assert time.monotonic() - started < 15
    assert not _alive(pid)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


async def test_a_server_on_the_2025_handshake_is_refreshed_by_its_list_changed_notification(
    tmp_path: Path,
) -> None:
    record = tmp_path / "record.txt"
    # A probe interval far beyond the test: only the notification can refresh the list.
    servers = config(classic=stdio_table(record, mode="legacy", probe_interval=600))
    async with running_app(tmp_path / "cortex", mcp_config=servers) as running:
        await until_serving(running, "classic")
        user = await sign_up(running)
        assert "tools/classic.added" not in await user.names()
        await user.output("classic.change_tools")

        async def listed() -> bool:
            return "tools/classic.added" in await user.names()

        await eventually(listed, 10)
        slow = user.invoke("classic.slow", {"seconds": 20, "marker": "legacy"}, deadline=1.0)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await slow
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: _async(_exists_line(record, "cancelled legacy")), 10)


def _exists(path: Path) -> bool:
    return path.exists() and bool(path.read_text())


def _exists_line(path: Path, line: str) -> bool:
    return path.exists() and line in path.read_text().splitlines()


async def test_a_server_that_does_not_connect_in_time_is_stopped_and_tried_again(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "mute.pid"
    mute = _mute(pid_file, connect_timeout=1)
    async with running_app(tmp_path / "cortex", mcp_config=config(mute=mute)) as running:
        await eventually(lambda: _async(_exists(pid_file)))
        first = int(pid_file.read_text())

        async def backing_off() -> bool:
            return await health(running, "cortex.background.mcp-mute") == NOT_SERVING

        await eventually(backing_off, 10)  # the connect deadline passed: a failure
        await eventually(
            lambda: _async(_exists(pid_file) and int(pid_file.read_text()) != first), 15
        )
        assert not _alive(first)  # the process that did not answer was stopped, not left behind
        assert await health(running, "cortex.tools.mute") == NOT_SERVING
