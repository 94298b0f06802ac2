"""SQL implementation of :class:`~cortex_core.ports.OutboxRepository`: the event store.

Two tables (migrations 0012 and 0013):

* ``event_streams``: per stream, ``last_sequence`` (the last sequence given out)
  and ``relayed_sequence`` (the last one the external log acknowledged);
* ``events``: ``(stream, sequence)`` → event id, time, envelope, payload. Task
  journals are streams here too (``task:<id>``, adapters/sql/tasks.py): numbered
  by their task row instead (the fenced bump of ``tasks.last_sequence``), never
  relayed, kept by the task's own retention.

:meth:`SqlOutboxRepository.append` numbers and stores a stream's events in one
statement of the caller's transaction. On PostgreSQL it is a data-modifying CTE:
``WITH bumped AS (INSERT INTO event_streams … ON CONFLICT (stream) DO UPDATE SET
last_sequence = last_sequence + n RETURNING last_sequence) INSERT INTO events
SELECT … FROM bumped``; the upsert locks the stream's row until the transaction
ends, so a second writer of the same stream waits there and gets the next
numbers only after the first committed (or the same ones after a rollback):
sequences follow commit order, with no gap. On SQLite every write transaction
holds the database's one writer lock anyway; the INSERT reads the next number
itself and a trigger (migration 0012) moves ``last_sequence`` along.
Streams are numbered in sorted order, so two transactions never wait on each
other's streams in a cycle; the append is the last statement of its unit of
work, so a transaction holding a stream's row waits for nothing else.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from cortex_core.adapters.sql import tables
from cortex_core.adapters.sql.connection import Connection
from cortex_core.domain.event_records import EventEnvelope, EventRead, EventRecord, NewEvent

e, s = tables.events, tables.event_streams
_COLUMNS = ["stream", "sequence", "event_id", "time", "envelope", "payload"]


class SqlOutboxRepository:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    async def append(self, events: Sequence[NewEvent]) -> builtins.list[EventRecord]:
        if not events:
            return []
        by_stream: dict[str, builtins.list[int]] = {}
        for n, event in enumerate(events):
            by_stream.setdefault(event.stream, []).append(n)
        numbered: dict[int, int] = {}
        postgres = self._conn.dialect.name == "postgresql"
        for stream in sorted(by_stream):
            batch = [events[n] for n in by_stream[stream]]
            if postgres:
                sequences = await self._numbered_postgres(stream, batch)
            else:
                sequences = [await self._numbered_sqlite(event) for event in batch]
            numbered.update(zip(by_stream[stream], sequences, strict=True))
        return [
            EventRecord(e.stream, numbered[n], e.event_id, e.time, e.envelope, e.payload)
            for n, e in enumerate(events)
        ]

    async def _numbered_postgres(self, stream: str, batch: Sequence[NewEvent]) -> list[int]:
        """One statement: the stream's upsert (its row lock) in a CTE, the rows after it."""
        if len(batch) == 1:
            found = await self._conn.execute(_postgres_single(), _parameters(batch[0]))
            return [int(found.scalar_one())]
        count = len(batch)
        bumped = _bump(count)
        rows = [
            sa.select(
                sa.literal(stream, sa.String),
                bumped.c.last_sequence - (count - 1 - offset),
                sa.literal(event.event_id, sa.String),
                sa.literal(event.time, tables.UtcDateTime),
                sa.literal(event.envelope.pack(), sa.Text),
                sa.literal(event.payload, sa.LargeBinary),
            )
            for offset, event in enumerate(batch)
        ]
        statement = (
            e.insert()
            .from_select(_COLUMNS, sa.union_all(*rows))
            .add_cte(bumped)
            .returning(e.c.sequence)
        )
        found = (await self._conn.execute(statement, {"stream": stream})).scalars().all()
        return sorted(int(n) for n in found)

    async def _numbered_sqlite(self, event: NewEvent) -> int:
        """One statement: the next number read in the INSERT; the trigger of migration
        0012 (``events_number``) moves the stream's ``last_sequence`` to it. The
        writer lock keeps anyone from reading the same number meanwhile."""
        found = await self._conn.execute(_sqlite_single(), _parameters(event))
        return int(found.scalar_one())

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        heads = sa.select(
            sa.select(s.c.last_sequence).where(s.c.stream == stream).scalar_subquery(),
            sa.select(sa.func.min(e.c.sequence)).where(e.c.stream == stream).scalar_subquery(),
        )
        head = (await self._conn.execute(heads)).one()
        last = int(head[0] or 0)
        oldest = int(head[1]) if head[1] is not None else last + 1
        records: tuple[EventRecord, ...] = ()
        if limit > 0 and after_sequence < last:
            records = await read_records(self._conn, stream, after_sequence, limit)
        return EventRead(records, oldest, last)

    async def last_sequences(self, streams: Sequence[str]) -> dict[str, int]:
        if not streams:
            return {}
        rows = await self._conn.execute(
            sa.select(s.c.stream, s.c.last_sequence).where(s.c.stream.in_(list(streams)))
        )
        found = {row.stream: int(row.last_sequence) for row in rows}
        return {stream: found.get(stream, 0) for stream in streams}

    async def pending(self, limit: int) -> builtins.list[EventRecord]:
        rows = await self._conn.execute(
            sa.select(e)
            .join(s, s.c.stream == e.c.stream)
            .where(s.c.last_sequence > s.c.relayed_sequence, e.c.sequence > s.c.relayed_sequence)
            .order_by(e.c.stream, e.c.sequence)
            .limit(limit)
        )
        return [_record(row) for row in rows]

    async def acknowledge(self, positions: Mapping[str, int]) -> None:
        for stream, sequence in sorted(positions.items()):
            await self._conn.execute(
                s.update()
                .where(s.c.stream == stream, s.c.relayed_sequence < sequence)
                .values(relayed_sequence=sequence)
            )
            await self._conn.execute(
                e.delete().where(e.c.stream == stream, e.c.sequence <= sequence)
            )

    async def trim(self, *, before: datetime | None, max_length: int | None) -> int:
        gone = 0
        if before is not None:
            logged = e.c.stream.in_(sa.select(s.c.stream))  # not the task journals
            gone += (await self._conn.execute(e.delete().where(e.c.time < before, logged))).rowcount
        if max_length is not None:
            keep_from = (
                sa.select(s.c.last_sequence - max_length)
                .where(s.c.stream == e.c.stream)
                .scalar_subquery()
            )
            gone += (await self._conn.execute(e.delete().where(e.c.sequence <= keep_from))).rowcount
        return gone


def _parameters(event: NewEvent) -> dict[str, Any]:
    return {
        "stream": event.stream,
        "event_id": event.event_id,
        "time": event.time,
        "envelope": event.envelope.pack(),
        "payload": event.payload,
    }


def _bump(count: int) -> Any:
    """The upsert of the ``stream`` parameter's row by ``count``, as a CTE."""
    stream = sa.bindparam("stream", type_=sa.String)
    return (
        postgresql.insert(s)
        .values(stream=stream, last_sequence=count, relayed_sequence=0)
        .on_conflict_do_update(
            index_elements=[s.c.stream], set_={"last_sequence": s.c.last_sequence + count}
        )
        .returning(s.c.last_sequence)
        .cte("bumped")
    )


@functools.cache
def _postgres_single() -> Any:
    """Built once: building it per call cost about a millisecond of CPU."""
    bumped = _bump(1)
    row = sa.select(
        sa.bindparam("stream", type_=sa.String),
        bumped.c.last_sequence,
        sa.bindparam("event_id", type_=sa.String),
        sa.bindparam("time", type_=tables.UtcDateTime),
        sa.bindparam("envelope", type_=sa.Text),
        sa.bindparam("payload", type_=sa.LargeBinary),
    )
    return e.insert().from_select(_COLUMNS, row).add_cte(bumped).returning(e.c.sequence)


@functools.cache
def _sqlite_single() -> Any:
    after = sa.func.coalesce(
        sa.select(s.c.last_sequence)
        .where(s.c.stream == sa.bindparam("stream", type_=sa.String))
        .scalar_subquery(),
        0,
    )
    return (
        e.insert()
        .values(
            stream=sa.bindparam("stream", type_=sa.String),
            sequence=after + 1,
            event_id=sa.bindparam("event_id", type_=sa.String),
            time=sa.bindparam("time", type_=tables.UtcDateTime),
            envelope=sa.bindparam("envelope", type_=sa.Text),
            payload=sa.bindparam("payload", type_=sa.LargeBinary),
        )
        .returning(e.c.sequence)
    )


async def insert_records(conn: Connection, records: Sequence[EventRecord]) -> None:
    """Store numbered records (the caller allocated their sequences in this
    transaction: :meth:`SqlOutboxRepository.append`, or a task's journal)."""
    if not records:
        return
    await conn.execute(
        e.insert(),
        [
            {
                "stream": r.stream,
                "sequence": r.sequence,
                "event_id": r.event_id,
                "time": r.time,
                "envelope": r.envelope.pack(),
                "payload": r.payload,
            }
            for r in records
        ],
    )


async def read_records(
    conn: Connection, stream: str, after_sequence: int, limit: int
) -> tuple[EventRecord, ...]:
    """Up to ``limit`` stored records of ``stream`` after ``after_sequence``, ascending."""
    rows = await conn.execute(
        sa.select(e)
        .where(e.c.stream == stream, e.c.sequence > after_sequence)
        .order_by(e.c.sequence)
        .limit(limit)
    )
    return tuple(_record(row) for row in rows)


async def oldest_sequence(conn: Connection, stream: str) -> int | None:
    """The lowest sequence of ``stream`` still stored (None: nothing is)."""
    found = await conn.execute(sa.select(sa.func.min(e.c.sequence)).where(e.c.stream == stream))
    value = found.scalar_one_or_none()
    return int(value) if value is not None else None


def _record(row: Any) -> EventRecord:
    return EventRecord(
        row.stream,
        int(row.sequence),
        row.event_id,
        row.time,
        EventEnvelope.unpack(row.envelope),
        bytes(row.payload),
    )
