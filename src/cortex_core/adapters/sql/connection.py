# ruff: noqa: UP044  (Unpack[...]: mypy infers row types from it, not from *...)
"""The connection a unit of work's repositories talk to, and SQLite's one writer.

SQLite allows one writer at a time per file. Left to itself, every writing
transaction of a burst holds a pooled connection while SQLite's busy handler
sleeps and polls for the file lock, so the pool runs dry and callers time out.
Here writes are serialized on purpose instead:

* reads run on a pooled connection, concurrently (WAL lets readers and the one
  writer proceed together);
* at its first write, a unit of work gives its read connection back, waits for
  the database's writer lock (an ``asyncio.Lock``: first come, first served,
  and waiting costs no connection and no thread), then takes a connection whose
  driver starts ``BEGIN IMMEDIATE`` with that first write, in the same round
  trip (:mod:`~cortex_core.adapters.sql.sqlite_driver`); it keeps both until
  commit or rollback.

Giving the read connection back loses nothing: the pysqlite driver runs the
reads before a transaction's first write outside any transaction (it only
sends ``BEGIN`` before the first INSERT/UPDATE/DELETE), so they never formed a
snapshot to keep. PostgreSQL needs none of this (row locks, MVCC); its units of
work use :class:`PooledConnection` alone: a connection taken at the first
statement and given back at commit or rollback, on both backends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVarTuple, Unpack, overload

from sqlalchemy.engine import CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.selectable import TypedReturnsRows
from sqlalchemy.util.typing import TupleAny

from cortex_core.adapters.sql.driver_errors import database_busy, translate_errors

_Ts = TypeVarTuple("_Ts")


class Connection(Protocol):
    """What repositories use of a connection (``AsyncConnection`` satisfies it)."""

    @property
    def dialect(self) -> Dialect: ...

    @overload
    async def execute(
        self,
        statement: TypedReturnsRows[Unpack[_Ts]],
        parameters: Any = None,
    ) -> CursorResult[Unpack[_Ts]]: ...

    @overload
    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[Unpack[TupleAny]]: ...

    def begin_nested(self) -> contextlib.AbstractAsyncContextManager[Any]: ...


class PooledConnection:
    """A unit of work's connection, taken from the pool at its first statement and
    given back at commit or rollback, so a unit of work holds none while it waits
    on anything else. Failing to get a connection or to commit comes out
    translated (``driver_errors``).
    Not safe for concurrent use by several tasks (neither is a unit of work)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    @property
    def dialect(self) -> Dialect:
        return self._engine.dialect

    async def execute(
        self, statement: Executable, parameters: Any = None
    ) -> CursorResult[Unpack[TupleAny]]:
        """Typed through :class:`Connection`, which repositories see."""
        with translate_errors():
            await self._before(statement)
            conn = await self._connection()
        # Statement errors stay raw here (a repository may handle one, e.g. a
        # unique violation inside a savepoint); the unit of work translates the
        # rest when it exits.
        return await conn.execute(statement, parameters)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        """A savepoint inside the unit of work's transaction."""
        with translate_errors():
            await self._before_savepoint()
            conn = await self._connection()
        async with conn.begin_nested():
            yield

    async def commit(self) -> None:
        with translate_errors():
            await self._end(commit=True)

    async def rollback(self) -> None:
        await self._end(commit=False)

    async def close(self) -> None:
        """Roll back whatever is open and give everything back."""
        await self._end(commit=False)

    async def _before(self, statement: Executable) -> None:
        """Hook: run before each statement."""

    async def _before_savepoint(self) -> None:
        """Hook: run before each savepoint."""

    async def _connection(self) -> AsyncConnection:
        if self._conn is None:
            conn = await self._engine.connect()
            try:
                await conn.begin()
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _end(self, *, commit: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if commit:
                await conn.commit()
            elif conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()


class SerializedSqliteConnection(PooledConnection):
    """SQLite: reads as :class:`PooledConnection`; writes one at a time under ``writer``.

    ``wait`` bounds how long a write waits for the writer lock; past it the
    write fails with ``Unavailable`` (reason ``DATABASE_BUSY``, retryable).
    """

    def __init__(self, engine: AsyncEngine, writer: asyncio.Lock, wait: float) -> None:
        super().__init__(engine)
        self._writer = writer
        self._wait = wait
        self._writing = False

    async def _before(self, statement: Executable) -> None:
        if not self._writing and getattr(statement, "is_dml", False):
            # The driver sends BEGIN IMMEDIATE with this statement (sqlite_driver).
            await self._start_writing(begin=False)

    async def _before_savepoint(self) -> None:
        await self._start_writing(begin=True)  # only writes use savepoints

    async def _start_writing(self, *, begin: bool) -> None:
        if self._writing:
            return
        await super()._end(commit=False)  # reads so far ran outside any transaction
        try:
            async with asyncio.timeout(self._wait):
                await self._writer.acquire()
        except TimeoutError:
            raise database_busy() from None
        self._writing = True
        if not begin:
            return
        try:
            conn = await self._connection()
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            await self._end(commit=False)
            raise

    async def _end(self, *, commit: bool) -> None:
        try:
            await super()._end(commit=commit)
        finally:
            if self._writing:
                self._writing = False
                self._writer.release()
