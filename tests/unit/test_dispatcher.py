"""Events reach every handler, the event type's own before its base types', and
one failing handler does not stop the others; a stored change is never published
after its commit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cortex_core.domain.conversations import Conversation
from cortex_core.domain.events import Change, ReplyDelta, WorkspaceDeleted
from cortex_core.services.dispatcher import EventBus

T = datetime(2026, 1, 1, tzinfo=UTC)
CONVERSATION = Conversation("c", "w", "", "", "u", 0, T, T)


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


class _Recorder:
    """Records what reaches the log directly."""

    def __init__(self) -> None:
        self.published: list[Change] = []

    async def stage(self, uow: object, changes: object) -> list[object]:
        return []

    async def committed(self, records: object) -> None:
        return None

    async def publish(self, changes: list[Change]) -> None:
        self.published.extend(changes)


async def test_a_stored_change_cannot_be_published_after_its_commit() -> None:
    recorder = _Recorder()
    bus = EventBus(recorder)  # type: ignore[arg-type]
    seen: list[object] = []

    async def handler(event: object) -> None:
        seen.append(event)

    bus.subscribe(object, handler)
    change = WorkspaceDeleted(actor_id="u", time=datetime.now(UTC), deleted_workspace_id="w")
    with pytest.raises(ValueError, match="WorkspaceDeleted"):
        await bus.publish([change])  # its event belongs in its transaction (EventBus.commit)
    assert seen == []
    assert recorder.published == []
    delta = ReplyDelta(
        actor_id="", time=datetime.now(UTC), conversation=CONVERSATION, reply_id="r", text="hi"
    )
    await bus.publish([delta])  # reply text in progress is no stored change
    assert seen == [delta]
    assert recorder.published == [delta]
