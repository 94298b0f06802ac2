"""The event log in the database: the event store read as an :class:`~cortex_core.ports.EventLog`.

Used when no Redis is configured (the embedded default, and replicas sharing
PostgreSQL without Redis). Events are written by the unit of work of their change
(``uow.outbox.append``), so the log holds exactly the committed changes, numbered
in commit order per stream, and survives a restart or a SIGKILL with them.
:meth:`SqlEventLog.append` is for events that report no stored change (reply
text in progress): one short transaction of its own.

Wake-ups: the hub hands this process's records to its subscribers itself
(``EventHub.published``); :meth:`SqlEventLog.wait` looks at the streams' last
sequences every ``poll`` seconds, which is how another process's appends arrive
(and what a lost in-process hand-off costs at most).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime, timedelta

from cortex_core.domain.event_records import (
    MAX_SEQUENCE,
    EventEnvelope,
    EventRead,
    EventRecord,
    NewEvent,
)
from cortex_core.errors import Unavailable
from cortex_core.ports import UnitOfWorkFactory

DEFAULT_POLL = 1.0


class SqlEventLog:
    """An event log over the event store (``adapters/sql/outbox.py``).

    ``max_length`` holds at once (reads leave out what it drops); both limits
    delete rows in :meth:`trim` (the relay's supervised loop calls it every 30 s),
    not on each append, so an append stays two statements.
    Database failures come out as ``Unavailable`` (``DATABASE_UNAVAILABLE`` …), as
    from any unit of work."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        *,
        max_length: int | None = None,
        max_age: timedelta | None = None,
        poll: float = DEFAULT_POLL,
    ) -> None:
        self._uow = uow
        self._max_length = max_length
        self._max_age = max_age
        self._poll = poll
        self._closed = asyncio.Event()

    async def append(
        self, stream: str, event_id: str, envelope: EventEnvelope, payload: bytes, now: datetime
    ) -> EventRecord:
        async with self._uow() as uow:
            (record,) = await uow.outbox.append(
                [NewEvent(stream, event_id, now, envelope, payload)]
            )
            await uow.commit()
        return record

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        if not 0 <= after_sequence <= MAX_SEQUENCE:
            raise ValueError("after_sequence is out of range")
        async with self._uow() as uow:
            found = await uow.outbox.read(stream, after_sequence, limit)
        if self._max_length is None:
            return found
        # Retention by length holds at once (rows beyond it go at the next trim).
        floor = found.last_sequence - self._max_length + 1
        if found.oldest_available >= floor:
            return found
        kept = tuple(r for r in found.records if r.sequence >= floor)
        if not kept and found.records and after_sequence + 1 < floor:
            return await self.read(stream, floor - 1, limit)
        return EventRead(kept, floor, found.last_sequence)

    async def wait(self, cursors: Mapping[str, int], max_wait: float) -> set[str]:
        wait = min(max_wait, self._poll)
        if not self._closed.is_set():
            try:
                async with asyncio.timeout(wait):
                    await self._closed.wait()
            except TimeoutError:
                pass
        if not cursors or self._closed.is_set():
            return set()
        try:
            async with self._uow() as uow:
                last = await uow.outbox.last_sequences(sorted(cursors))
        except Unavailable:
            return set()  # the readers' own reads report the outage
        return {stream for stream, after in cursors.items() if last[stream] > after}

    async def trim(self, now: datetime) -> int:
        """Apply retention; how many events were dropped."""
        if self._max_age is None and self._max_length is None:
            return 0
        async with self._uow() as uow:
            gone = await uow.outbox.trim(
                before=now - self._max_age if self._max_age is not None else None,
                max_length=self._max_length,
            )
            await uow.commit()
        return gone

    async def close(self) -> None:
        self._closed.set()
