"""What the use cases exchange with a language-model provider."""

from __future__ import annotations

import dataclasses

from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.tools import ToolCall


@dataclasses.dataclass(frozen=True, slots=True)
class PromptMessage:
    """One message of a prompt.

    An ``assistant`` message may carry the ``tool_calls`` it made; each is answered
    by a ``tool`` message whose ``tool_call_id`` names the call and whose
    ``content`` is the result as JSON text (``tool_error`` when it failed or was
    denied)."""

    role: str  # "system", "user", "assistant" or "tool"
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    tool_name: str = ""  # for "tool": the tool id that produced the result
    tool_error: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a streamed completion: text, complete tool calls (the
    provider assembles streamed argument fragments), the provider's usage
    report, or the finish reason (the last chunk; TOOL_CALLS when the model
    stopped to call tools).

    ``provider`` and ``model`` name who produced it, when a chain of providers
    chose one (empty: the provider that was called)."""

    text: str = ""
    usage: Usage | None = None
    finish: FinishReason | None = None
    provider: str = ""
    model: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
