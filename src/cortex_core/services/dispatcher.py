"""The dispatcher: commands to their one handler, events to all of theirs.

* :class:`CommandBus` — a command has exactly one handler, registered once
  (a second registration is a programming error), and the handler's result or
  failure goes straight back to the caller.
* :class:`EventBus` — domain events go to every handler registered for their
  type. Use cases publish only after their unit of work has committed, so
  nothing is announced for a change that rolled back. Handlers are isolated from
  each other and from the caller: one handler's failure is logged and the
  others still run; the use case has already succeeded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from cortex_core.domain.changes import Change

log = logging.getLogger(__name__)

Handler = Callable[[Change], Awaitable[None]]
C = TypeVar("C")


class CommandBus:
    def __init__(self) -> None:
        self._handlers: dict[type[Any], Callable[[Any], Any]] = {}

    def register(self, kind: type[C], handler: Callable[[C], Any]) -> None:
        if kind in self._handlers:
            raise ValueError(f"{kind.__name__} already has a handler")
        self._handlers[kind] = handler

    def handle(self, command: object) -> Any:
        """Run the command's handler and return what it returns (a coroutine or a
        stream); an unregistered command is a programming error (LookupError)."""
        handler = self._handlers.get(type(command))
        if handler is None:
            raise LookupError(f"no handler for {type(command).__name__}")
        return handler(command)


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
