"""SQL implementation of :class:`~cortex_core.ports.OutboxRepository`."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from cortex_core.adapters.sql import tables
from cortex_core.adapters.sql.connection import Connection
from cortex_core.domain.event_records import PendingEvent

o = tables.outbox


class SqlOutboxRepository:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    async def add(self, stream: str, event_id: str, payload: bytes, time: datetime) -> None:
        await self._conn.execute(
            o.insert().values(stream=stream, event_id=event_id, payload=payload, create_time=time)
        )

    async def head(self, limit: int) -> list[PendingEvent]:
        rows = (await self._conn.execute(sa.select(o).order_by(o.c.id).limit(limit))).all()
        return [
            PendingEvent(row.id, row.stream, row.event_id, bytes(row.payload), row.create_time)
            for row in rows
        ]

    async def remove(self, outbox_id: int) -> None:
        await self._conn.execute(o.delete().where(o.c.id == outbox_id))
