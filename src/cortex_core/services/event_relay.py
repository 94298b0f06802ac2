"""Getting every committed change into the event log, even while the log is down.

Changes are published after their commit. The relay appends each one to the
event log straight away; when the log is unavailable it keeps the event in the
database outbox instead, and from then on every later event of this process
goes through the outbox too, so the order of events is kept. A background loop
moves outbox rows to the log, oldest first, as soon as the log is back, and
returns to the direct path once the outbox is empty. Delivery is at least
once: a crash between an append and the removal of its row appends that event
again after restart (with the same event id).

Rows written by any replica are relayed by whichever replica gets them first;
the log assigns the sequence, so a late event gets a later sequence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cortex_core import errors
from cortex_core.domain.changes import Change
from cortex_core.ports import UnitOfWorkFactory
from cortex_core.services.event_hub import EventHub

log = logging.getLogger(__name__)

Encoded = tuple[str, str, bytes]  # stream, event id, payload
BATCH = 100


class EventRelay:
    def __init__(
        self,
        *,
        hub: EventHub,
        uow: UnitOfWorkFactory,
        encode: Callable[[Change], Encoded],
        retry_interval: float = 1.0,
    ) -> None:
        self._hub = hub
        self._uow = uow
        self._encode = encode
        self._retry_interval = retry_interval
        self._backlog = True  # until the first drain proves the outbox empty
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    async def publish(self, change: Change) -> None:
        """An event-bus handler: append the change's event, or keep it for later."""
        stream, event_id, payload = self._encode(change)
        if not self._backlog:
            try:
                await self._hub.publish(stream, event_id, payload, change.time)
                return
            except errors.Unavailable:
                log.warning("event log unavailable; keeping events in the outbox")
        async with self._lock:
            async with self._uow() as uow:
                await uow.outbox.add(stream, event_id, payload, change.time)
                await uow.commit()
            self._backlog = True
        self._wake.set()

    async def run(self) -> None:
        """Relay outbox rows to the log until cancelled."""
        while True:
            try:
                moved = await self._drain()
            except errors.Unavailable:
                moved = 0
            except Exception:
                log.exception("relaying the event outbox failed; retrying")
                moved = 0
            if not self._backlog:
                self._wake.clear()
                await self._wake.wait()
            elif moved == 0:
                await asyncio.sleep(self._retry_interval)

    async def _drain(self) -> int:
        """Move what the outbox holds; leave the backlog mode when it is empty."""
        moved = 0
        while True:
            async with self._uow() as uow:
                pending = await uow.outbox.head(BATCH)
            if not pending:
                async with self._lock:
                    async with self._uow() as uow:
                        if not await uow.outbox.head(1):
                            if self._backlog and moved:
                                log.info("event log caught up", extra={"relayed": moved})
                            self._backlog = False
                            return moved
                continue
            for event in pending:
                await self._hub.publish(event.stream, event.event_id, event.payload, event.time)
                async with self._uow() as uow:
                    await uow.outbox.remove(event.outbox_id)
                    await uow.commit()
                moved += 1
