"""aiosqlite connections that cost one thread round trip per statement.

aiosqlite runs each sqlite3 call on the connection's own thread and hands the
result back to the event loop. SQLAlchemy's adapter makes four such calls per
statement: create a cursor, execute, fetch the rows, close the cursor; and a
rollback whenever a connection goes back to the pool, even when nothing is
open. Each round trip waits for the event loop to come back to it, so under a
burst a SQLite write transaction held the writer lock (see
:mod:`~cortex_core.adapters.sql.connection`) for a dozen loop turns or more.

:class:`OneTripConnection` keeps aiosqlite's thread and queue but does a
statement in one round trip: the cursor is made, executed, drained and closed on
the thread, and the rows, ``description``, ``rowcount`` and ``lastrowid`` come
back together. A commit or rollback with no transaction open is answered
without a round trip (the connection knows, from the last call it made, whether
sqlite3 has a transaction open).

Connections open with ``isolation_level="IMMEDIATE"``: sqlite3 then starts a
transaction with ``BEGIN IMMEDIATE`` right before the first INSERT, UPDATE or
DELETE, in the same round trip (reads still run outside any transaction), which
is what the writer lock wants without a statement of its own.

It is plugged in through SQLAlchemy's ``async_creator_fn`` connect argument
(:func:`connect`), so the rest of SQLAlchemy's aiosqlite dialect is unchanged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import aiosqlite

_Description = tuple[tuple[Any, ...], ...] | None


class OneTripCursor:
    """What SQLAlchemy's aiosqlite adapter uses of a cursor, one round trip per statement.

    Rows are fetched with the statement; the fetch and close methods only hand
    them out."""

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self.description: _Description = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, sql: str, parameters: Any = None) -> OneTripCursor:
        args = () if parameters is None else (parameters,)
        self._take(await self._connection.run(_execute, sql, args, many=False))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        self._take(await self._connection.run(_execute, sql, (parameters,), many=True))
        return self

    def _take(self, outcome: tuple[_Description, int, int | None, list[Any]]) -> None:
        self.description, self.rowcount, self.lastrowid, self._rows = outcome

    async def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows

    async def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self.arraysize if size is None else size
        rows, self._rows = self._rows[:count], self._rows[count:]
        return rows

    async def close(self) -> None:
        self._rows = []

    async def setinputsizes(self, *sizes: Any) -> None:
        """DBAPI: a no-op for sqlite3."""


def _execute(
    conn: sqlite3.Connection, sql: str, args: Sequence[Any], *, many: bool
) -> tuple[_Description, int, int | None, list[Any]]:
    """On the connection's thread: one statement, start to end."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, *args)
        else:
            cursor.execute(sql, *args)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose statements take one round trip each."""

    _open_transaction = False  # as sqlite3 reported it after the last call

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        # No round trip: the sqlite3 cursor is made on the thread with each statement.
        return OneTripCursor(self)

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(sqlite3_connection, *args, **kwargs)`` on the connection's thread."""

        def call() -> Any:
            conn = self._conn
            try:
                return fn(conn, *args, **kwargs)
            finally:
                self._open_transaction = conn.in_transaction

        return await self._execute(call)  # type: ignore[no-untyped-call]

    async def commit(self) -> None:
        if self._open_transaction:
            await self.run(sqlite3.Connection.commit)

    async def rollback(self) -> None:
        if self._open_transaction:
            await self.run(sqlite3.Connection.rollback)


def connect(database: str, **kwargs: Any) -> OneTripConnection:
    """SQLAlchemy's ``async_creator_fn``: a :class:`OneTripConnection` to ``database``
    (``kwargs`` go to :func:`sqlite3.connect`), starting write transactions with
    ``BEGIN IMMEDIATE``."""
    kwargs.setdefault("isolation_level", "IMMEDIATE")

    def connector() -> sqlite3.Connection:
        conn: sqlite3.Connection = sqlite3.connect(database, **kwargs)
        return conn

    connection = OneTripConnection(connector, iter_chunk_size=64)
    connection._thread.daemon = True  # as SQLAlchemy's dialect does for aiosqlite's own
    return connection
