"""Events reach every handler, the event type's own before its base types', and
one failing handler does not stop the others."""

from __future__ import annotations

from datetime import UTC, datetime

from cortex_core.domain.events import Change, WorkspaceDeleted
from cortex_core.services.dispatcher import EventBus


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


async def test_handlers_of_the_events_own_type_run_before_those_of_its_base_types() -> None:
    bus = EventBus()
    seen: list[str] = []

    async def relay(change: Change) -> None:
        seen.append("relay")

    async def reaction(change: WorkspaceDeleted) -> None:
        seen.append("reaction")

    bus.subscribe(Change, relay)
    bus.subscribe(WorkspaceDeleted, reaction)
    await bus.publish(
        [WorkspaceDeleted(actor_id="u", time=datetime.now(UTC), deleted_workspace_id="w")]
    )
    assert seen == ["reaction", "relay"]
