"""Getting every committed change into the event log, even while the log is down.

Changes are published after their commit. The relay turns each one into a
record (the change's :class:`EventEnvelope`, a new event id and the payload from
``encode``) and appends it to the event log port straight away, then hands the
stored record to the hub (:meth:`EventHub.published`: local subscribers get it
without a wake-up round trip through the log); when the log is
unavailable it keeps the record in the database outbox instead, and from then on
every later event of this process goes through the outbox too, so the order of
events is kept. :meth:`EventRelay.drain_once` moves outbox rows to the log,
oldest first; :meth:`EventRelay.run` calls it whenever there is a backlog and
returns to the direct path once the outbox is empty. Delivery is at least once:
a crash between an append and the removal of its row appends that event again
after restart (with the same event id).

Rows written by any replica are relayed by whichever replica gets them first;
the log assigns the sequence, so a late event gets a later sequence. An outbox
row holds ``b"\\0" + envelope.pack() + b"\\0" + payload``; a row in any other form
(written before envelopes existed) cannot be relayed and is dropped with an error
log rather than wedging the relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cortex_core import errors
from cortex_core.domain.event_records import EventEnvelope, PendingEvent
from cortex_core.domain.events import Change
from cortex_core.domain.identity import new_id
from cortex_core.ports import EventLog, Metrics, UnitOfWorkFactory
from cortex_core.services.event_hub import EventHub

log = logging.getLogger(__name__)

Encode = Callable[[Change, str], bytes]
"""The wire payload of a change, given its event id (pure: no I/O)."""
BATCH = 100
_MARK = b"\0"


class EventRelay:
    def __init__(
        self,
        *,
        log: EventLog,
        hub: EventHub,
        uow: UnitOfWorkFactory,
        encode: Encode,
        retry_interval: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._log = log
        self._metrics = metrics
        self._outboxed = 0  # events this replica put in the outbox and has not moved
        self._hub = hub
        self._uow = uow
        self._encode = encode
        self._retry_interval = retry_interval
        self._backlog = True  # until the first drain proves the outbox empty
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    @property
    def backlog(self) -> bool:
        """True while events go through the outbox (the log was unavailable)."""
        return self._backlog

    async def publish(self, change: Change) -> None:
        """An event-bus handler: append the change's event, or keep it for later.

        Raises only what the outbox's database raises (the log's outage is absorbed).
        """
        event_id = new_id()
        envelope = change.envelope
        payload = self._encode(change, event_id)
        if not self._backlog:
            try:
                record = await self._log.append(
                    change.stream, event_id, envelope, payload, change.time
                )
                self._hub.published(record)
                return
            except errors.Unavailable:
                log.warning("event log unavailable; keeping events in the outbox")
        kept = _MARK + envelope.pack().encode() + _MARK + payload
        async with self._lock:
            async with self._uow() as uow:
                await uow.outbox.add(change.stream, event_id, kept, change.time)
                await uow.commit()
            self._backlog = True
            self._count_outbox(+1)
        self._wake.set()

    async def run(self) -> None:
        """Relay outbox rows to the log until cancelled; failures are logged and retried."""
        while True:
            try:
                await self.drain_and_wait()
            except errors.Unavailable:
                await asyncio.sleep(self._retry_interval)
            except Exception:
                log.exception("relaying the event outbox failed; retrying")
                await asyncio.sleep(self._retry_interval)

    async def drain_once(self) -> int:
        """One pass for a supervisor: move everything the outbox holds to the log,
        oldest first, and leave the backlog mode when it is empty.

        Returns how many events it moved. Raises ``Unavailable`` when the log or
        the database cannot be reached (what was moved stays moved); call again.
        """
        moved = 0
        while True:
            async with self._uow() as uow:
                pending = await uow.outbox.head(BATCH)
            if not pending:
                async with self._lock:
                    async with self._uow() as uow:
                        if not await uow.outbox.head(1):
                            if self._backlog and moved:
                                log.info("event log caught up (%d events relayed)", moved)
                            self._backlog = False
                            self._count_outbox(-self._outboxed)
                            return moved
                continue
            for event in pending:
                await self._relay(event)
                async with self._uow() as uow:
                    await uow.outbox.remove(event.outbox_id)
                    await uow.commit()
                moved += 1
                self._count_outbox(-1 if self._outboxed else 0)

    async def drain_and_wait(self) -> None:
        """The supervised step: :meth:`drain_once`, then wait until there may be
        more (a wake-up from :meth:`publish` once events go to the outbox, or
        ``retry_interval`` while a backlog remains). Raises what ``drain_once``
        raises; the supervisor backs off and calls again."""
        moved = await self.drain_once()
        if not self._backlog:
            self._wake.clear()
            await self._wake.wait()
        elif moved == 0:
            await asyncio.sleep(self._retry_interval)

    def _count_outbox(self, delta: int) -> None:
        self._outboxed += delta
        if self._metrics is not None:
            self._metrics.outbox_backlog(self._outboxed)

    async def _relay(self, event: PendingEvent) -> None:
        kept = event.payload
        if kept[:1] != _MARK or _MARK not in kept[1:]:
            log.error("dropping outbox event %s: not in the relay's format", event.event_id)
            return
        packed, _, payload = kept[1:].partition(_MARK)
        try:
            envelope = EventEnvelope.unpack(packed.decode())
        except (ValueError, UnicodeDecodeError):
            log.error("dropping outbox event %s: its envelope is unreadable", event.event_id)
            return
        record = await self._log.append(event.stream, event.event_id, envelope, payload, event.time)
        self._hub.published(record)
