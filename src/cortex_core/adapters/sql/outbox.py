"""SQL implementation of :class:`~cortex_core.ports.OutboxRepository`: the event store.

Two tables (migrations 0011 and 0012):

* ``event_streams``: per stream, ``last_sequence`` (the last sequence given out)
  and ``relayed_sequence`` (the last one the external log acknowledged);
* ``events``: ``(stream, sequence)`` → event id, time, envelope, payload. Task
  journals are streams here too (``task:<id>``, adapters/sql/tasks.py): numbered
  by their task row instead (the fenced bump of ``tasks.last_sequence``), never
  relayed, kept by the task's own retention.

:meth:`SqlOutboxRepository.append` numbers events with one upsert per stream,
``INSERT … ON CONFLICT (stream) DO UPDATE SET last_sequence = last_sequence + n
RETURNING last_sequence``, in the caller's transaction. On PostgreSQL the upsert
locks the stream's row until the transaction ends, so a second writer of the same
stream waits there and gets the next numbers only after the first committed (or
gets the same ones after a rollback): sequences follow commit order, with no gap.
On SQLite every write transaction holds the database's one writer lock anyway.
Streams are numbered in sorted order, so two transactions never wait on each
other's streams in a cycle; the append is the last statement of its unit of
work, so a transaction holding a stream's row waits for nothing else.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cortex_core.adapters.sql import tables
from cortex_core.adapters.sql.connection import Connection
from cortex_core.domain.event_records import EventEnvelope, EventRead, EventRecord, NewEvent

e, s = tables.events, tables.event_streams


class SqlOutboxRepository:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    async def append(self, events: Sequence[NewEvent]) -> builtins.list[EventRecord]:
        if not events:
            return []
        by_stream: dict[str, builtins.list[NewEvent]] = {}
        for event in events:
            by_stream.setdefault(event.stream, []).append(event)
        records: dict[int, EventRecord] = {}
        order = {id(event): n for n, event in enumerate(events)}
        for stream in sorted(by_stream):
            batch = by_stream[stream]
            last = await self._bump(stream, len(batch))
            for offset, event in enumerate(batch):
                sequence = last - len(batch) + 1 + offset
                records[order[id(event)]] = EventRecord(
                    stream, sequence, event.event_id, event.time, event.envelope, event.payload
                )
        await insert_records(self._conn, list(records.values()))
        return [records[n] for n in range(len(events))]

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

    async def _bump(self, stream: str, count: int) -> int:
        insert: Any = (
            postgresql.insert if self._conn.dialect.name == "postgresql" else sqlite.insert
        )
        statement = (
            insert(s)
            .values(stream=stream, last_sequence=count, relayed_sequence=0)
            .on_conflict_do_update(
                index_elements=[s.c.stream], set_={"last_sequence": s.c.last_sequence + count}
            )
            .returning(s.c.last_sequence)
        )
        return int((await self._conn.execute(statement)).scalar_one())


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
