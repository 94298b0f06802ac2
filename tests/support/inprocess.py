"""An in-process Cortex server on a real port, with chosen servicers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from cortex_core.bootstrap import App, bootstrap
from cortex_core.server import RunningServer, start
from cortex_core.settings import Settings


@contextlib.asynccontextmanager
async def running_app(
    tmp_path: Path, servicers: dict[str, object] | None = None, **settings: object
) -> AsyncIterator[RunningServer]:
    config = Settings(grpc_address="127.0.0.1:0", data_dir=tmp_path, **settings)  # type: ignore[arg-type]
    app: App = bootstrap(config)
    app.servicers.update(servicers or {})
    running = await start(app)
    try:
        yield running
    finally:
        if not app.streams.draining:
            await running.drain()
