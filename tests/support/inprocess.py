"""An in-process Cortex server on a real port, with chosen servicers, database and clock."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from cortex_core.bootstrap import App, bootstrap
from cortex_core.ports import Clock, LlmProvider, ToolSource
from cortex_core.server import RunningServer, start
from cortex_core.settings import Settings

TEST_JWT_SECRET = "test-secret-" + "x" * 60
T = TypeVar("T")


@contextlib.asynccontextmanager
async def running_app(
    tmp_path: Path,
    servicers: dict[str, object] | None = None,
    *,
    clock: Clock | None = None,
    provider: LlmProvider | None = None,
    tool_sources: Sequence[ToolSource] = (),
    **settings: object,
) -> AsyncIterator[RunningServer]:
    values: dict[str, object] = {
        "grpc_address": "127.0.0.1:0",
        "data_dir": tmp_path,
        "jwt_secret": TEST_JWT_SECRET,
        "access_log": False,
    }
    if settings.get("redis_url"):
        # The shared Redis keeps per-address counts across tests and test runs, and every
        # client here signs up from 127.0.0.1: a throttle test sets its own limits.
        values["register_address_attempts"] = 1_000_000
        values["login_address_attempts"] = 1_000_000
    values.update(settings)
    app: App = bootstrap(
        Settings(**values),  # type: ignore[arg-type]
        clock=clock,
        provider=provider,
        extra_tool_sources=tool_sources,
    )
    app.servicers.update(servicers or {})
    running = await start(app)
    try:
        yield running
    finally:
        if not app.streams.draining:
            await running.drain()


@contextlib.contextmanager
def server_thread(
    kind: str,
    tmp_path: Path,
    prepare: Callable[[RunningServer], Awaitable[T]],
    **settings: object,
) -> Iterator[tuple[str, T]]:
    """A server on a fresh ``kind`` database ("sqlite" or "postgresql"), on its own
    event loop in a thread, for synchronous clients (Hypothesis); yield its address
    and what ``prepare`` returned once it ran."""
    from support.databases import database_url

    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        try:
            async with (
                database_url(kind, tmp_path) as url,
                running_app(tmp_path, database_url=url, **settings) as running,
            ):
                box["address"] = running.address
                box["prepared"] = await prepare(running)
                box["stop"] = stop = asyncio.Event()
                box["loop"] = asyncio.get_running_loop()
                ready.set()
                await stop.wait()
        except BaseException as exc:
            box["error"] = exc
            ready.set()
            raise

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(120)
    if "error" in box:
        raise box["error"]
    try:
        yield box["address"], box["prepared"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(60)
