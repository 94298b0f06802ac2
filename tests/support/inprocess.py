"""An in-process Cortex server on a real port, with chosen servicers, database and clock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from cortex_core.bootstrap import App, bootstrap
from cortex_core.ports import Clock, LlmProvider, ToolSource
from cortex_core.server import RunningServer, start
from cortex_core.settings import Settings

TEST_JWT_SECRET = "test-secret-" + "x" * 60


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
