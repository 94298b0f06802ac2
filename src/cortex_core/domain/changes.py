"""Domain events: facts about committed changes, published after their commit.

Each change names the event stream it belongs to: ``ws:<workspace id>`` for
what happens in a workspace (seen by its members), ``user:<user id>`` for
security events (seen only by that user).
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

from cortex_core.domain.conversations import Conversation, Message
from cortex_core.domain.identity import MemberView, Session, Workspace
from cortex_core.domain.memories import Memory


def workspace_stream(workspace_id: str) -> str:
    return f"ws:{workspace_id}"


def user_stream(user_id: str) -> str:
    return f"user:{user_id}"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """Base of every domain event."""

    actor_id: str
    time: datetime

    @property
    def workspace_id(self) -> str:
        return ""

    @property
    def stream(self) -> str:
        return workspace_stream(self.workspace_id)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceCreated(Change):
    workspace: Workspace

    @property
    def workspace_id(self) -> str:
        return self.workspace.id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceUpdated(Change):
    workspace: Workspace
    fields: tuple[str, ...]

    @property
    def workspace_id(self) -> str:
        return self.workspace.id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceDeleted(Change):
    deleted_workspace_id: str

    @property
    def workspace_id(self) -> str:
        return self.deleted_workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConversationCreated(Change):
    conversation: Conversation

    @property
    def workspace_id(self) -> str:
        return self.conversation.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConversationUpdated(Change):
    conversation: Conversation
    fields: tuple[str, ...]

    @property
    def workspace_id(self) -> str:
        return self.conversation.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConversationDeleted(Change):
    conversation: Conversation

    @property
    def workspace_id(self) -> str:
        return self.conversation.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MessageCreated(Change):
    message: Message

    @property
    def workspace_id(self) -> str:
        return self.message.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplyStarted(Change):
    conversation: Conversation
    reply_id: str
    user_message: Message

    @property
    def workspace_id(self) -> str:
        return self.conversation.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplyDelta(Change):
    """More text of a reply in progress (pieces coalesced)."""

    conversation: Conversation
    reply_id: str
    text: str

    @property
    def workspace_id(self) -> str:
        return self.conversation.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplyCompleted(Change):
    message: Message

    @property
    def workspace_id(self) -> str:
        return self.message.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemberAdded(Change):
    member: MemberView

    @property
    def workspace_id(self) -> str:
        return self.member.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemberRemoved(Change):
    member: MemberView

    @property
    def workspace_id(self) -> str:
        return self.member.workspace_id


class RevokeReason(enum.Enum):
    LOGOUT = "logout"
    REVOKED = "revoked"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    PASSWORD_CHANGED = "password_changed"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class UserChange(Change):
    """A security event; it goes only to the user concerned."""

    user_id: str

    @property
    def stream(self) -> str:
        return user_stream(self.user_id)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionCreated(UserChange):
    session: Session


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionRevoked(UserChange):
    session_id: str
    reason: RevokeReason


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PasswordChanged(UserChange):
    session_id: str
    revoked_session_count: int


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemoryCreated(Change):
    memory: Memory

    @property
    def workspace_id(self) -> str:
        return self.memory.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemoryDeleted(Change):
    """A memory is gone: deleted by a member, or (``expired``) by the sweeper."""

    memory: Memory
    expired: bool = False

    @property
    def workspace_id(self) -> str:
        return self.memory.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SummaryWritten:
    """A summary checkpoint was stored. Not a :class:`Change`: it is a fact for
    this process's reactions (dropping cached windows), never sent to clients."""

    workspace_id: str
    conversation_id: str
