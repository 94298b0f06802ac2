"""What the use cases exchange with a language-model provider."""

from __future__ import annotations

import dataclasses
import json
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


NO_RESULT = json.dumps({"error": "no result was recorded for this call"})


def well_formed(messages: Sequence[PromptMessage]) -> list[PromptMessage]:
    """``messages`` as every model API accepts them, nothing the model said lost.

    The one rule for dangling tool history (the model adapters apply it before
    sending; docs/llm.md): every call of an assistant message is answered right
    after it, once, in call order, by the first ``tool`` message that names it
    among those following it; a call with no such message is answered with an
    error result (:data:`NO_RESULT`); any other ``tool`` message (its call is
    not just before it, or it answers a call twice) becomes user text
    (:func:`result_as_text`), after the answers.

    Stored history can break the shape: a window that starts after a step's
    assistant message (a summary cut), a process that died between a step and
    its results."""
    out: list[PromptMessage] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        index += 1
        if message.role == "tool":
            out.append(result_as_text(message))  # answers no call just before it
            continue
        out.append(message)
        if message.role != "assistant" or not message.tool_calls:
            continue
        answers: dict[str, PromptMessage] = {}
        strays: list[PromptMessage] = []
        while index < len(messages) and messages[index].role == "tool":
            result = messages[index]
            index += 1
            expected = any(c.id == result.tool_call_id for c in message.tool_calls)
            if expected and result.tool_call_id not in answers:
                answers[result.tool_call_id] = result
            else:
                strays.append(result_as_text(result))
        for call in message.tool_calls:
            out.append(
                answers.get(call.id)
                or PromptMessage(
                    "tool", NO_RESULT, tool_call_id=call.id, tool_name=call.tool, tool_error=True
                )
            )
        out.extend(strays)  # after the answers: the APIs want those right after the calls
    return out


def result_as_text(message: PromptMessage) -> PromptMessage:
    """A ``tool`` message as user text (``[result of <tool>]`` or ``[error from <tool>]``)."""
    what = message.tool_name or "a tool"
    kind = "error from" if message.tool_error else "result of"
    return PromptMessage("user", f"[{kind} {what}]\n{message.content}")


def tool_message(result: ToolResult) -> PromptMessage:
    """The ``tool`` message that tells the model ``result``."""
    return PromptMessage(
        "tool",
        result_text(result),
        tool_call_id=result.call_id,
        tool_name=result.tool,
        tool_error=not result.ok,
    )
