"""The event bus: every domain event to every handler registered for its type.

Use cases that change stored data hand their changes to :meth:`EventBus.commit`
with their unit of work: the changes' events are written in that transaction
(the bus's recorder, ``services/event_relay.py``), then it commits, then the
handlers run, then the events go to the log. Every stored change goes this
way: :meth:`EventBus.publish` is only for events that report no stored change
(reply text in progress) and for facts of this process.

Handlers run in order — those for the event's own type first, then those for its
base types (so a reaction such as dropping a cache runs before the event reaches
subscribers) — and are isolated from each other and from the caller: one
handler's failure is logged and the others still run; the use case has already
succeeded.

There is no command bus: each servicer calls its use case directly (see
docs/context.md, "Why SendMessage has no command bus").
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from cortex_core.domain.event_records import EventRecord
from cortex_core.domain.events import Change
from cortex_core.ports import UnitOfWork

log = logging.getLogger(__name__)

E = TypeVar("E")
Handler = Callable[[Any], Awaitable[None]]


class Recorder(Protocol):
    """Where changes become events (``EventRelay``)."""

    async def stage(self, uow: UnitOfWork, changes: Sequence[Change]) -> list[EventRecord]: ...

    async def committed(self, records: Sequence[EventRecord]) -> None: ...

    async def publish(self, changes: Sequence[Change]) -> None: ...


class EventBus:
    def __init__(self, recorder: Recorder | None = None) -> None:
        self._handlers: defaultdict[type[Any], list[Handler]] = defaultdict(list)
        self._recorder = recorder

    def subscribe(self, kind: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Call ``handler`` for every published event that is a ``kind``."""
        self._handlers[kind].append(handler)

    async def commit(self, uow: UnitOfWork, events: Sequence[object]) -> None:
        """Write the events of the changes among ``events`` in ``uow``, commit it,
        then deliver ``events`` to the handlers and the events to the log. Raises
        what the commit raises (then nothing is delivered); never after it."""
        changes = [e for e in events if isinstance(e, Change)]
        recorder = self._recorder
        records = await recorder.stage(uow, changes) if recorder and changes else []
        await uow.commit()
        await self._deliver(events)
        if records:
            assert recorder is not None
            try:
                await recorder.committed(records)
            except Exception:
                log.exception("relaying committed events failed (the relay loop retries)")

    async def publish(self, events: Sequence[object]) -> None:
        """Deliver each event, in order, to each matching handler, and the changes
        among them to the log directly: only for events that report no stored
        change (``Change.DURABLE`` false: reply text in progress) and facts for
        this process. A stored change's event must be written in its transaction
        (:meth:`commit`), so a durable change here is a programming error
        (``ValueError``, nothing delivered); otherwise never raises."""
        changes = [e for e in events if isinstance(e, Change)]
        stored = [type(c).__name__ for c in changes if c.DURABLE]
        if stored and self._recorder is not None:
            raise ValueError(f"stored changes must be committed with their events: {stored}")
        await self._deliver(events)
        if changes and self._recorder is not None:
            try:
                await self._recorder.publish(changes)
            except Exception:
                log.exception("publishing transient events failed")

    async def _deliver(self, events: Sequence[object]) -> None:
        for event in events:
            for kind in type(event).__mro__:
                for handler in self._handlers.get(kind, ()):
                    try:
                        await handler(event)
                    except Exception:
                        log.exception(
                            "event handler failed",
                            extra={"event": type(event).__name__, "handler": repr(handler)},
                        )
