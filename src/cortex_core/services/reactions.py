"""What follows a committed change besides its announcement: event-bus handlers.

* **Cached context windows** are dropped by every change that alters them: a
  message (a user's, or a stored reply), a conversation edited or deleted (a
  deletion marks the memories derived from it stale, so every window of the
  workspace goes), a memory created, deleted or expired, a summary written.
* **Revoked sessions** are forgotten at once by every listener on this replica
  (the Authenticator's session cache, the guard of running replies), so
  revocation is immediate here and within ``recheck`` everywhere else.

Each handler is registered for the event's own type, so it runs before the
event is relayed to subscribers (the relay listens on the base ``Change``):
whoever hears of a change and asks again gets fresh data.
"""

from __future__ import annotations

from collections.abc import Sequence

from cortex_core.domain.cache_keys import conversation_context_prefix, workspace_context_prefix
from cortex_core.domain.events import (
    ConversationDeleted,
    ConversationUpdated,
    MemoryCreated,
    MemoryDeleted,
    MessageCreated,
    SessionRevoked,
    SummaryWritten,
)
from cortex_core.ports import Cache, RevocationListener
from cortex_core.services.dispatcher import EventBus


def register(bus: EventBus, *, cache: Cache, revocations: Sequence[RevocationListener]) -> None:
    """Subscribe every reaction to ``bus``."""

    async def conversation_changed(workspace_id: str, conversation_id: str) -> None:
        await cache.delete_prefix(conversation_context_prefix(workspace_id, conversation_id))

    async def message_created(change: MessageCreated) -> None:
        await conversation_changed(change.workspace_id, change.message.conversation_id)

    async def conversation_updated(change: ConversationUpdated) -> None:
        await conversation_changed(change.workspace_id, change.conversation.id)

    async def summary_written(fact: SummaryWritten) -> None:
        await conversation_changed(fact.workspace_id, fact.conversation_id)

    async def workspace_changed(
        change: ConversationDeleted | MemoryCreated | MemoryDeleted,
    ) -> None:
        await cache.delete_prefix(workspace_context_prefix(change.workspace_id))

    async def session_revoked(change: SessionRevoked) -> None:
        for listener in revocations:
            listener.sessions_revoked([change.session_id])

    bus.subscribe(MessageCreated, message_created)
    bus.subscribe(ConversationUpdated, conversation_updated)
    bus.subscribe(SummaryWritten, summary_written)
    bus.subscribe(ConversationDeleted, workspace_changed)
    bus.subscribe(MemoryCreated, workspace_changed)
    bus.subscribe(MemoryDeleted, workspace_changed)
    bus.subscribe(SessionRevoked, session_revoked)
