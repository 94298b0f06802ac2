"""The SQL :class:`~cortex_core.ports.Database`: engine, pragmas, migrations, errors.

Foreign driver exceptions are translated here, in one table, so callers only
ever see :mod:`cortex_core.errors`: a database that cannot be reached (refused,
timed out, dropped connection) becomes ``Unavailable``; a unique-constraint
violation becomes ``AlreadyExists``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from cortex_core import errors
from cortex_core.adapters.sql.conversations import SqlConversationRepository
from cortex_core.adapters.sql.memories import SqlMemoryRepository
from cortex_core.adapters.sql.outbox import SqlOutboxRepository
from cortex_core.adapters.sql.repositories import (
    SqlSessionRepository,
    SqlUserRepository,
    SqlWorkspaceRepository,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 30.0


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise driver exceptions as domain errors (most specific first)."""
    try:
        yield
    except exc.IntegrityError as error:
        if _is_unique_violation(error):
            raise errors.AlreadyExists("the resource already exists") from error
        raise errors.FailedPrecondition(
            "the change refers to a resource that does not exist", reason="REFERENCE_MISSING"
        ) from error
    except exc.DBAPIError as error:
        if error.connection_invalidated or isinstance(
            error, exc.OperationalError | exc.InterfaceError
        ):
            raise _unavailable() from error
        raise
    except (OSError, TimeoutError) as error:
        raise _unavailable() from error


def _is_unique_violation(error: exc.IntegrityError) -> bool:
    sqlstate = getattr(error.orig, "sqlstate", None)  # asyncpg
    if sqlstate is not None:
        return bool(sqlstate == "23505")
    return "UNIQUE constraint failed" in str(error.orig)  # sqlite


def _unavailable() -> errors.Unavailable:
    return errors.Unavailable(
        "the database is unavailable; retry later", reason="DATABASE_UNAVAILABLE"
    )


def create_engine(url: str) -> AsyncEngine:
    """An async engine tuned per backend: WAL and foreign keys on SQLite, short
    connect timeouts and pre-ping on PostgreSQL."""
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 15})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        connect_args={
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": STATEMENT_TIMEOUT_SECONDS,
        },
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class SqlDatabase:
    """Owns the engine; hands out units of work over one transaction each."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> SqlDatabase:
        return cls(create_engine(url))

    async def migrate(self) -> None:
        """Apply pending migrations; for SQLite, create the file's directory first."""
        from cortex_core.adapters.sql.migrate import upgrade_to_head

        with translate_errors():
            url = self.engine.url
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            await upgrade_to_head(self.engine)

    async def ping(self) -> None:
        with translate_errors():
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                async with self.engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()

    def unit_of_work(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine)


class SqlUnitOfWork:
    """One database transaction; rolled back unless :meth:`commit` is called."""

    users: SqlUserRepository
    workspaces: SqlWorkspaceRepository
    sessions: SqlSessionRepository
    conversations: SqlConversationRepository
    memories: SqlMemoryRepository
    outbox: SqlOutboxRepository

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> Self:
        with translate_errors():
            self._conn = await self._engine.connect()
            await self._conn.begin()
        self.users = SqlUserRepository(self._conn)
        self.workspaces = SqlWorkspaceRepository(self._conn)
        self.sessions = SqlSessionRepository(self._conn)
        self.conversations = SqlConversationRepository(self._conn)
        self.outbox = SqlOutboxRepository(self._conn)
        self.memories = SqlMemoryRepository(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()
        if isinstance(exc_value, exc.SQLAlchemyError | OSError):
            with translate_errors():
                raise exc_value

    async def commit(self) -> None:
        assert self._conn is not None, "commit outside of 'async with'"
        with translate_errors():
            await self._conn.commit()
            await self._conn.begin()

    async def rollback(self) -> None:
        assert self._conn is not None, "rollback outside of 'async with'"
        await self._conn.rollback()
        await self._conn.begin()
