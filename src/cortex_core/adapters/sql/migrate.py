"""Run Alembic migrations on the server's own async engine."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
#: The PostgreSQL advisory lock every Cortex migrator of a database takes ("cort").
MIGRATION_LOCK = 0x636F7274


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade_to_head(engine: AsyncEngine) -> None:
    """Apply every pending migration in one transaction (idempotent).

    On PostgreSQL the transaction first takes :data:`MIGRATION_LOCK`, so migrators
    that start together (replicas, or a deploy step beside running ones) take turns:
    the next one finds the schema at head and does nothing, instead of failing on a
    table the first just created. The lock goes with the transaction."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
        await conn.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
