"""Fixtures shared by every tier: real servers, real ports, real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.databases import database_url
from support.servers import ServerProcess, cortex_server

from cortex_core.adapters.sql.database import SqlDatabase


@pytest.fixture(scope="session")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One ``cortex-core serve`` process on the embedded defaults for the session."""
    with cortex_server(tmp_path_factory.mktemp("cortex-server")) as server:
        yield server


@pytest.fixture(scope="session")
def server_address(server_process: ServerProcess) -> str:
    """``127.0.0.1:PORT`` of the shared server process."""
    return server_process.address


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database on SQLite and on PostgreSQL."""
    async with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[SqlDatabase]:
    """The storage layer over a fresh, migrated ``db_url``."""
    db = SqlDatabase.from_url(db_url)
    await db.migrate()
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture(scope="session", autouse=True)
def _loopback_sign_up_limits_start_fresh() -> None:
    """Every test client signs up and signs in from loopback, and the shared Redis keeps
    per-address throttle state across runs (a lock set by an earlier run on this machine
    outlives it). Start each run without it; the throttle tests set their own limits."""
    import os

    import redis

    url = os.environ.get("CORTEX_TEST_REDIS_URL")
    if not url:
        return
    client = redis.Redis.from_url(url)
    try:
        for kind in ("register", "address"):
            for address in ("127.0.0.1", "::1"):
                client.delete(f"cortex:throttle:{kind}:{address}")
    finally:
        client.close()
