"""What the use cases exchange with a language-model provider."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.tools import ToolCall, ToolResult, result_text


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


def well_formed(messages: Sequence[PromptMessage]) -> list[PromptMessage]:
    """``messages`` as every model API accepts them: each ``tool`` message follows
    the assistant message that made its call (with only other results between),
    and an assistant message keeps only the calls that have a result.

    Stored history can break that shape (a window trimmed inside a step, a
    process that died between a step and its results, calls still pending): a
    result without its call is dropped, and so is a call without its result."""
    shaped: list[PromptMessage] = []
    open_at = -1  # index in ``shaped`` of the assistant message whose results follow
    answered: set[str] = set()

    def close() -> None:
        nonlocal open_at
        if open_at >= 0:
            turn = shaped[open_at]
            kept = tuple(c for c in turn.tool_calls if c.id in answered)
            if not kept and not turn.content:
                del shaped[open_at]  # nothing was answered, so it is the last one
            elif kept != turn.tool_calls:
                shaped[open_at] = dataclasses.replace(turn, tool_calls=kept)
        open_at = -1
        answered.clear()

    for message in messages:
        if message.role == "tool":
            calls = shaped[open_at].tool_calls if open_at >= 0 else ()
            if any(c.id == message.tool_call_id for c in calls) and (
                message.tool_call_id not in answered
            ):
                answered.add(message.tool_call_id)
                shaped.append(message)
            continue
        close()
        shaped.append(message)
        if message.role == "assistant" and message.tool_calls:
            open_at = len(shaped) - 1
    close()
    return shaped


def tool_message(result: ToolResult) -> PromptMessage:
    """The ``tool`` message that tells the model ``result``."""
    return PromptMessage(
        "tool",
        result_text(result),
        tool_call_id=result.call_id,
        tool_name=result.tool,
        tool_error=not result.ok,
    )
