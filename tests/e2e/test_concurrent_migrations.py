"""Migrators that start together on one PostgreSQL database take turns.

``cortex-core migrate`` (and every replica's start) takes a PostgreSQL advisory lock
for its migration transaction. The test holds that lock itself, as a migrator in
progress would, and checks that a second migrator waits for it instead of racing
(three processes started at once used to fail one of them with "the resource
already exists"), then finishes once the lock is released.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url
from support.databases import postgres_database

from cortex_core.adapters.sql.migrate import MIGRATION_LOCK

CORTEX = Path(sys.executable).with_name("cortex-core")


async def connect(url: str) -> asyncpg.Connection:
    parsed = make_url(url)
    return await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
    )


async def waiting_for_the_lock(connection: asyncpg.Connection) -> int:
    """How many other sessions wait for the migration lock."""
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND pid <> pg_backend_pid() AND database = ("
            "SELECT oid FROM pg_database WHERE datname = current_database())"
        )
    )


async def test_a_second_migrator_waits_for_the_first_and_then_finds_nothing_to_do() -> None:
    async with postgres_database() as url:
        holder = await connect(url)
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")},
                "CORTEX_DATABASE_URL": url,
            }
            migrator = await asyncio.create_subprocess_exec(
                str(CORTEX), "migrate", env=env, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            async with asyncio.timeout(60):
                while await waiting_for_the_lock(holder) == 0:
                    assert migrator.returncode is None, await migrator.stdout.read()  # type: ignore[union-attr]
                    await asyncio.sleep(0.1)
            tables = await holder.fetchval(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
            )
            assert tables == 0  # it waits before touching the schema

            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
            output, _ = await asyncio.wait_for(migrator.communicate(), 60)

            assert migrator.returncode == 0, output
            assert b"migrations applied" in output
            assert await holder.fetchval("SELECT version_num FROM alembic_version")
        finally:
            await holder.close()
