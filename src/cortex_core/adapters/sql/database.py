"""The SQL :class:`~cortex_core.ports.Database`: engine, pragmas, migrations.

Driver exceptions reach callers only as :mod:`cortex_core.errors`, through the
one table in :mod:`~cortex_core.adapters.sql.driver_errors`. How SQLite writes
are serialized is explained in :mod:`~cortex_core.adapters.sql.connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from cortex_core.adapters.sql import sqlite_driver
from cortex_core.adapters.sql.connection import PooledConnection, SerializedSqliteConnection
from cortex_core.adapters.sql.conversations import SqlConversationRepository
from cortex_core.adapters.sql.driver_errors import translate_errors
from cortex_core.adapters.sql.identity import (
    SqlSessionRepository,
    SqlUserRepository,
    SqlWorkspaceRepository,
)
from cortex_core.adapters.sql.memories import SqlMemoryRepository
from cortex_core.adapters.sql.outbox import SqlOutboxRepository
from cortex_core.adapters.sql.tasks import SqlTaskRepository

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 30.0
# How long a unit of work waits for a pooled connection (and, on SQLite, for the
# writer lock, or another process's write) before it fails with DATABASE_BUSY.
DEFAULT_WAIT_SECONDS = 30.0


def create_engine(
    url: str, *, pooled: bool = True, wait: float = DEFAULT_WAIT_SECONDS
) -> AsyncEngine:
    """An async engine tuned per backend: WAL and foreign keys on SQLite, short
    connect and statement timeouts on PostgreSQL; ``wait`` seconds for a pooled
    connection. ``pooled=False`` gives one fresh connection per use (the health
    probe's, which must not queue behind the requests' pool)."""
    pool: dict[str, Any] = {"pool_timeout": wait} if pooled else {"poolclass": NullPool}
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": wait, "async_creator_fn": sqlite_driver.connect}, **pool
        )
        busy_ms = round(wait * 1000)
        event.listen(
            engine.sync_engine, "connect", lambda dbapi, _: _sqlite_pragmas(dbapi, busy_ms)
        )
        return engine
    if pooled:
        # No pre-ping: it costs a round trip on every checkout, and units of work
        # check out once per transaction. After a restart of PostgreSQL the first
        # statement on a dead connection fails (UNAVAILABLE, with RetryInfo) and
        # SQLAlchemy then discards every connection older than that failure.
        pool.update(pool_size=10, max_overflow=20)
    return create_async_engine(
        url,
        connect_args={
            "timeout": CONNECT_TIMEOUT_SECONDS,
            "command_timeout": STATEMENT_TIMEOUT_SECONDS,
        },
        **pool,
    )


def _sqlite_pragmas(dbapi_connection: Any, busy_ms: int) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class SqlDatabase:
    """Owns the engines; hands out units of work over one transaction each.

    On SQLite it also owns the writer lock every writing unit of work takes
    (see :mod:`~cortex_core.adapters.sql.connection`).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        probe: AsyncEngine | None = None,
        *,
        wait: float = DEFAULT_WAIT_SECONDS,
    ) -> None:
        self.engine = engine
        self._probe = probe or engine
        self._wait = wait
        sqlite = engine.url.get_backend_name() == "sqlite"
        self._writer = asyncio.Lock() if sqlite else None

    @classmethod
    def from_url(cls, url: str, *, wait: float = DEFAULT_WAIT_SECONDS) -> SqlDatabase:
        """Engines for ``url``; ``wait``: seconds a unit of work may wait for a
        connection or the write lock before ``Unavailable(DATABASE_BUSY)``."""
        return cls(
            create_engine(url, wait=wait), create_engine(url, pooled=False, wait=wait), wait=wait
        )

    def pool_usage(self) -> dict[str, int]:
        """The request pool's connections by state (``checked_out``, ``idle``,
        ``overflow``, ``size``); plain counter reads, safe from a scrape thread."""
        pool: Any = self.engine.pool
        usage: dict[str, int] = {}
        for state, method in (
            ("checked_out", "checkedout"),
            ("idle", "checkedin"),
            ("overflow", "overflow"),
            ("size", "size"),
        ):
            read = getattr(pool, method, None)  # NullPool/StaticPool count nothing
            if read is not None:
                usage[state] = max(int(read()), 0)
        return usage

    async def migrate(self) -> None:
        """Apply pending migrations; for SQLite, first create the file (0600) and
        its directory (0700) if missing: messages and password hashes are not for
        other local users (SQLite gives its -wal and -shm files the same mode)."""
        from cortex_core.adapters.sql.migrate import upgrade_to_head

        with translate_errors():
            url = self.engine.url
            if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
                await asyncio.to_thread(_create_owner_only, Path(url.database))
            await upgrade_to_head(self.engine)

    async def ping(self) -> None:
        """Raise ``Unavailable`` unless the database answers within the connect
        timeout, on a connection of its own: a pool drained by a burst is
        pressure, not an outage, and must not fail the probe."""
        with translate_errors():
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                async with self._probe.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._probe is not self.engine:
            await self._probe.dispose()

    def unit_of_work(self) -> SqlUnitOfWork:
        if self._writer is None:
            return SqlUnitOfWork(PooledConnection(self.engine))
        return SqlUnitOfWork(SerializedSqliteConnection(self.engine, self._writer, self._wait))


def _create_owner_only(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SqlUnitOfWork:
    """One database transaction; rolled back unless :meth:`commit` is called.

    The connection is taken at the first statement and given back at
    :meth:`commit` or :meth:`rollback` (the next statement starts a new
    transaction), so a unit of work holds none while it waits on anything else.
    """

    users: SqlUserRepository
    workspaces: SqlWorkspaceRepository
    sessions: SqlSessionRepository
    conversations: SqlConversationRepository
    memories: SqlMemoryRepository
    outbox: SqlOutboxRepository
    tasks: SqlTaskRepository

    def __init__(self, connection: PooledConnection) -> None:
        self._conn = connection
        self.users = SqlUserRepository(connection)
        self.workspaces = SqlWorkspaceRepository(connection)
        self.sessions = SqlSessionRepository(connection)
        self.conversations = SqlConversationRepository(connection)
        self.outbox = SqlOutboxRepository(connection)
        self.memories = SqlMemoryRepository(connection)
        self.tasks = SqlTaskRepository(connection)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._conn.close()
        if isinstance(exc_value, exc.SQLAlchemyError | OSError):
            with translate_errors():
                raise exc_value

    async def commit(self) -> None:
        await self._conn.commit()

    async def rollback(self) -> None:
        await self._conn.rollback()
