"""Database URLs for tests: a fresh SQLite file, or a fresh PostgreSQL database.

PostgreSQL tests read ``CORTEX_TEST_DATABASE_URL`` (for example
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``) and create a throw-away
database per test on that server. When ``CI=true`` they must run: a missing
variable fails the test instead of skipping it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_env(name: str) -> str:
    value = os.environ.get(name, "")
    if value:
        return value
    if in_ci():
        pytest.fail(f"{name} must be set when CI=true (storage tests never skip in CI)")
    pytest.skip(f"{name} is not set")


@contextlib.asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """Create an empty database on the test server; yield its SQLAlchemy URL."""
    base = make_url(require_env("CORTEX_TEST_DATABASE_URL"))
    name = f"cortex_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(
        host=base.host or "127.0.0.1",
        port=base.port or 5432,
        user=base.username or "postgres",
        password=base.password,
        database=base.database or "postgres",
    )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database of ``kind`` ("sqlite" or "postgresql")."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'cortex.db'}"
        return
    async with postgres_database() as url:
        yield url
