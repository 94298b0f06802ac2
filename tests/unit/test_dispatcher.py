"""Commands have exactly one handler and fail loudly; events reach every handler,
and one failing handler does not stop the others."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cortex_core.domain.changes import Change, WorkspaceDeleted
from cortex_core.services.dispatcher import CommandBus, EventBus


class Ping:
    pass


def test_a_command_goes_to_its_one_handler_and_its_result_comes_back() -> None:
    bus = CommandBus()
    bus.register(Ping, lambda command: "pong")
    assert bus.handle(Ping()) == "pong"


def test_a_second_handler_for_a_command_is_refused() -> None:
    bus = CommandBus()
    bus.register(Ping, lambda command: "pong")
    with pytest.raises(ValueError, match="Ping"):
        bus.register(Ping, lambda command: "again")


def test_a_command_handlers_failure_reaches_the_caller() -> None:
    bus = CommandBus()

    def fail(command: Ping) -> None:
        raise RuntimeError("boom")

    bus.register(Ping, fail)
    with pytest.raises(RuntimeError, match="boom"):
        bus.handle(Ping())
    with pytest.raises(LookupError):
        CommandBus().handle(Ping())


async def test_one_failing_event_handler_does_not_stop_the_others() -> None:
    bus = EventBus()
    seen: list[str] = []

    async def broken(change: Change) -> None:
        raise RuntimeError("handler bug")

    async def recorder(change: Change) -> None:
        seen.append(type(change).__name__)

    bus.subscribe(Change, broken)
    bus.subscribe(WorkspaceDeleted, recorder)
    change = WorkspaceDeleted(actor_id="u", time=datetime.now(UTC), deleted_workspace_id="w")
    await bus.publish([change, change])
    assert seen == ["WorkspaceDeleted", "WorkspaceDeleted"]
