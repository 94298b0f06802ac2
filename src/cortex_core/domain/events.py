"""Domain events: facts about committed changes, written in their transaction.

Each change names the event stream it belongs to: ``ws:<workspace id>`` for
what happens in a workspace (seen by its members), ``user:<user id>`` for
security events (seen only by that user) (``task:<task id>`` is a task's
journal, written by the task runtime), and the :class:`EventEnvelope` stored
with its event (what subscriptions filter and authorize on).
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import ClassVar

from cortex_core.domain.conversations import Conversation, Message
from cortex_core.domain.event_records import EventEnvelope, EventKind
from cortex_core.domain.identity import MemberView, Session, Workspace
from cortex_core.domain.memories import Memory
from cortex_core.domain.tasks import Task, TaskState
from cortex_core.domain.tools import ToolCall, ToolResult


def workspace_stream(workspace_id: str) -> str:
    return f"ws:{workspace_id}"


def user_stream(user_id: str) -> str:
    return f"user:{user_id}"


TASK_STREAM_PREFIX = "task:"


def task_stream(task_id: str) -> str:
    """A task's journal (WatchTask frames): a stream of the event store that is
    never relayed to an external log (its watchers read the store)."""
    return TASK_STREAM_PREFIX + task_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """Base of every domain event."""

    KIND: ClassVar[EventKind]
    #: False for events that report no stored change (reply text in progress):
    #: they are appended directly instead of in a transaction (event_relay.py).
    DURABLE: ClassVar[bool] = True
    actor_id: str
    time: datetime

    @property
    def workspace_id(self) -> str:
        return ""

    @property
    def conversation_id(self) -> str:
        """The conversation the change is about, or ""."""
        return ""

    @property
    def subject(self) -> tuple[str, str]:
        """(user id, session id) the change is about: the member removed, the user
        and session of a security event; "" for none."""
        return "", ""

    @property
    def stream(self) -> str:
        return workspace_stream(self.workspace_id)

    @property
    def envelope(self) -> EventEnvelope:
        user_id, session_id = self.subject
        return EventEnvelope(
            self.KIND, self.workspace_id, self.conversation_id, user_id, session_id
        )


class _AboutConversation:
    """A change about a conversation: its workspace and conversation come from it."""

    __slots__ = ()
    conversation: Conversation

    @property
    def workspace_id(self) -> str:
        return self.conversation.workspace_id

    @property
    def conversation_id(self) -> str:
        return self.conversation.id


class _AboutMessage:
    """A change about a message: its workspace and conversation come from it."""

    __slots__ = ()
    message: Message

    @property
    def workspace_id(self) -> str:
        return self.message.workspace_id

    @property
    def conversation_id(self) -> str:
        return self.message.conversation_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceCreated(Change):
    KIND = EventKind.WORKSPACE_CREATED
    workspace: Workspace

    @property
    def workspace_id(self) -> str:
        return self.workspace.id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceUpdated(Change):
    KIND = EventKind.WORKSPACE_UPDATED
    workspace: Workspace
    fields: tuple[str, ...]

    @property
    def workspace_id(self) -> str:
        return self.workspace.id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceDeleted(Change):
    KIND = EventKind.WORKSPACE_DELETED
    deleted_workspace_id: str

    @property
    def workspace_id(self) -> str:
        return self.deleted_workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConversationCreated(_AboutConversation, Change):
    KIND = EventKind.CONVERSATION_CREATED
    conversation: Conversation


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConversationUpdated(_AboutConversation, Change):
    KIND = EventKind.CONVERSATION_UPDATED
    conversation: Conversation
    fields: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ConversationDeleted(_AboutConversation, Change):
    KIND = EventKind.CONVERSATION_DELETED
    conversation: Conversation


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MessageCreated(_AboutMessage, Change):
    KIND = EventKind.MESSAGE_CREATED
    message: Message


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplyStarted(_AboutConversation, Change):
    KIND = EventKind.REPLY_STARTED
    DURABLE = False  # announced once the reply's context is assembled, not stored
    conversation: Conversation
    reply_id: str
    user_message: Message | None  # None: a reply continued after approvals


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplyDelta(_AboutConversation, Change):
    """More text of a reply in progress (pieces coalesced)."""

    KIND = EventKind.REPLY_DELTA
    DURABLE = False
    conversation: Conversation
    reply_id: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplyCompleted(_AboutMessage, Change):
    KIND = EventKind.REPLY_COMPLETED
    message: Message


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallRequested(_AboutMessage, Change):
    """The model asked for ``tool_call`` in the stored assistant ``message``."""

    KIND = EventKind.TOOL_CALL_REQUESTED
    message: Message
    tool_call: ToolCall


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallCompleted(_AboutMessage, Change):
    """A call ended (ran, failed, was denied or cancelled); ``message`` is the
    stored tool message that holds ``result``."""

    KIND = EventKind.TOOL_CALL_COMPLETED
    message: Message
    result: ToolResult


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemberAdded(Change):
    KIND = EventKind.MEMBER_ADDED
    member: MemberView

    @property
    def workspace_id(self) -> str:
        return self.member.workspace_id

    @property
    def subject(self) -> tuple[str, str]:
        return self.member.user_id, ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemberRemoved(Change):
    KIND = EventKind.MEMBER_REMOVED
    member: MemberView

    @property
    def workspace_id(self) -> str:
        return self.member.workspace_id

    @property
    def subject(self) -> tuple[str, str]:
        return self.member.user_id, ""


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

    @property
    def subject(self) -> tuple[str, str]:
        return self.user_id, ""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionCreated(UserChange):
    KIND = EventKind.SESSION_CREATED
    session: Session

    @property
    def subject(self) -> tuple[str, str]:
        return self.user_id, self.session.id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SessionRevoked(UserChange):
    KIND = EventKind.SESSION_REVOKED
    session_id: str
    reason: RevokeReason

    @property
    def subject(self) -> tuple[str, str]:
        return self.user_id, self.session_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PasswordChanged(UserChange):
    KIND = EventKind.PASSWORD_CHANGED
    session_id: str
    revoked_session_count: int

    @property
    def subject(self) -> tuple[str, str]:
        return self.user_id, self.session_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemoryCreated(Change):
    KIND = EventKind.MEMORY_CREATED
    memory: Memory

    @property
    def workspace_id(self) -> str:
        return self.memory.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MemoryDeleted(Change):
    """A memory is gone: deleted by a member, or (``expired``) by the sweeper."""

    KIND = EventKind.MEMORY_DELETED
    memory: Memory
    expired: bool = False

    @property
    def workspace_id(self) -> str:
        return self.memory.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TaskStateChanged(Change):
    """An expert task changed state or attempt (``previous_state`` is None for a
    task just created; equal to ``task.state`` when only the attempt changed)."""

    KIND = EventKind.TASK_STATE_CHANGED
    task: Task
    previous_state: TaskState | None

    @property
    def workspace_id(self) -> str:
        return self.task.workspace_id


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SummaryWritten:
    """A summary checkpoint was stored. Not a :class:`Change`: it is a fact for
    this process's reactions (dropping cached windows), never sent to clients."""

    workspace_id: str
    conversation_id: str
