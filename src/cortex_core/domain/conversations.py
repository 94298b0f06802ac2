"""Conversations, their messages and summary checkpoints."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cortex_core.domain import names
from cortex_core.domain.tools import ToolCall, ToolCallState, ToolResult

MAX_TITLE = 200
MAX_SYSTEM_PROMPT = 20_000
MAX_CONTENT = 100_000


class MessageRole(enum.Enum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class FinishReason(enum.Enum):
    NONE = ""
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"
    BUDGET = "budget"
    ERROR = "error"
    TOOL_CALLS = "tool_calls"  # an intermediate step: tool results follow
    APPROVAL_REQUIRED = "approval_required"
    STEP_LIMIT = "step_limit"


@dataclasses.dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    workspace_id: str
    title: str
    system_prompt: str
    creator_id: str
    message_count: int
    create_time: datetime
    update_time: datetime
    last_message_time: datetime | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tools: tuple[str, ...] = ()  # tool ids (`<server>.<name>`) its replies may call

    @property
    def name(self) -> str:
        return names.conversation_name(self.workspace_id, self.id)


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str
    workspace_id: str
    position: int
    role: MessageRole
    content: str
    token_count: int
    create_time: datetime
    author_id: str = ""
    finish_reason: FinishReason = FinishReason.NONE
    model: str = ""
    metadata: Any = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    idempotency_key: str | None = None
    reply_to: str | None = None  # an assistant message: the user message it answers
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message: the calls of its step
    tool_result: ToolResult | None = None  # a tool message: the result of one call

    @property
    def pending_calls(self) -> tuple[ToolCall, ...]:
        """The calls of this message that wait for a person's decision."""
        return tuple(c for c in self.tool_calls if c.state is ToolCallState.PENDING_APPROVAL)

    @property
    def conversation_name(self) -> str:
        return names.conversation_name(self.workspace_id, self.conversation_id)

    @property
    def name(self) -> str:
        return names.message_name(self.workspace_id, self.conversation_id, self.id)


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """A checkpoint: the text stands for messages ``first_position..last_position``."""

    id: str
    conversation_id: str
    workspace_id: str
    text: str
    first_position: int
    last_position: int
    first_message_id: str
    last_message_id: str
    message_count: int
    token_count: int
    model: str
    create_time: datetime

    @property
    def name(self) -> str:
        return names.summary_name(self.workspace_id, self.conversation_id, self.id)
