"""The event bus: domain events go to every handler registered for their type.

Use cases publish only after their unit of work has committed, so nothing is
announced for a change that rolled back. Handlers are isolated from each other
and from the caller: one handler's failure is logged and the others still run;
the use case has already succeeded. (Commands are the use-case methods
themselves: each has exactly one handler and its failure reaches the caller.)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from cortex_core.domain.changes import Change

log = logging.getLogger(__name__)

Handler = Callable[[Change], Awaitable[None]]


class EventBus:
    def __init__(self) -> None:
        self._handlers: defaultdict[type[Change], list[Handler]] = defaultdict(list)

    def subscribe(self, kind: type[Change], handler: Handler) -> None:
        """Call ``handler`` for every published change that is a ``kind``."""
        self._handlers[kind].append(handler)

    async def publish(self, changes: Sequence[Change]) -> None:
        """Deliver each change, in order, to each matching handler; never raises."""
        for change in changes:
            for kind in type(change).__mro__:
                for handler in self._handlers.get(kind, ()):
                    try:
                        await handler(change)
                    except Exception:
                        log.exception(
                            "event handler failed",
                            extra={"event": type(change).__name__, "handler": repr(handler)},
                        )
