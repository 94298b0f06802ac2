"""The event bus: every domain event to every handler registered for its type.

Use cases publish only after their unit of work has committed, so nothing is
announced for a change that rolled back. Handlers run in order — those for the
event's own type first, then those for its base types (so a reaction such as
dropping a cache runs before the event is relayed to subscribers) — and are
isolated from each other and from the caller: one handler's failure is logged
and the others still run; the use case has already succeeded.

There is no command bus: each servicer calls its use case directly (see
docs/context.md, "Why SendMessage has no command bus").
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

E = TypeVar("E")
Handler = Callable[[Any], Awaitable[None]]


class EventBus:
    def __init__(self) -> None:
        self._handlers: defaultdict[type[Any], list[Handler]] = defaultdict(list)

    def subscribe(self, kind: type[E], handler: Callable[[E], Awaitable[None]]) -> None:
        """Call ``handler`` for every published event that is a ``kind``."""
        self._handlers[kind].append(handler)

    async def publish(self, events: Sequence[object]) -> None:
        """Deliver each event, in order, to each matching handler; never raises."""
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
