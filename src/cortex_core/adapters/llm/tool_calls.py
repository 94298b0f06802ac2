"""What both model adapters do the same way with tool calls.

* **Names.** Models get ``ToolSpec.function_name`` (the tool id with ``.`` → ``__``);
  :func:`finished_call` maps a name back to the tool id. A name that is no offered
  tool's function name (or id) gives a call with a ``TOOL_NOT_FOUND`` error whose
  ``tool`` is the name made dot-free, so it can never resolve to a real tool.
* **Arguments.** The streamed fragments are joined and parsed once the step has
  ended; text that is not a JSON object (cut, invalid, a list, ``NaN``) gives a
  call with empty arguments and an ``INVALID_TOOL_INPUT`` error quoting its start.
  Either way the loop answers the call with its error and the model can try again.
* **History.** With tools, the adapters send
  :func:`cortex_core.domain.llm.well_formed` of the prompt (the one rule for
  dangling calls and results); without, :func:`as_text` renders tool history as
  plain text (the APIs refuse tool blocks then).
"""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import PromptMessage, result_as_text
from cortex_core.domain.tools import ToolCall, ToolError, ToolSpec, function_name

_QUOTED = 120  # characters of a model's bad arguments quoted back to it


def plain(value: Any) -> Any:
    """``value`` as JSON-ready dicts and lists (specs and calls hold read-only mappings)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def arguments_json(call: ToolCall) -> str:
    return json.dumps(plain(call.arguments), separators=(",", ":"))


def offered(tools: Sequence[ToolSpec]) -> list[ToolSpec]:
    """The tools to send: one per function name (two ids can map to one name, as
    ``a.b.c`` and ``a.b__c`` do, or once cut to 64 characters; the first wins)."""
    seen: set[str] = set()
    unique = []
    for tool in tools:
        if tool.function_name not in seen:
            seen.add(tool.function_name)
            unique.append(tool)
    return unique


@dataclasses.dataclass
class PartialCall:
    """A call being streamed: the id and name of its first fragment, the argument
    text of all of them (``initial``: arguments sent whole up front, if any)."""

    id: str = ""
    name: str = ""
    fragments: list[str] = dataclasses.field(default_factory=list)
    initial: str = ""

    def done(self, tools: Sequence[ToolSpec]) -> ToolCall:
        raw = "".join(self.fragments) or self.initial
        # Some OpenAI-compatible servers send no id; the loop needs one to answer.
        return finished_call(self.id or f"call_{uuid.uuid4().hex[:24]}", self.name, raw, tools)


def finished_call(
    call_id: str, name: str, raw_arguments: str, tools: Sequence[ToolSpec]
) -> ToolCall:
    """The call a model streamed, its name mapped back to a tool id.

    ``raw_arguments`` is the joined argument text (empty: no arguments)."""
    tool = next((t for t in tools if name in (t.function_name, t.id)), None)
    arguments, problem = _parse(raw_arguments)
    if tool is None:
        error = ToolError(
            reason="TOOL_NOT_FOUND",
            message=f"There is no tool named {name[:64]!r} among the tools offered.",
        )
        return ToolCall(call_id, function_name(name), _frozen(arguments), error=error)
    if problem:
        error = ToolError(reason="INVALID_TOOL_INPUT", message=problem)
        return ToolCall(call_id, tool.id, _frozen({}), error=error)
    return ToolCall(call_id, tool.id, _frozen(arguments))


def step_finish(finish: FinishReason, calls: Sequence[ToolCall]) -> FinishReason:
    """TOOL_CALLS when the model stopped with calls to answer (some servers say
    ``stop`` instead of ``tool_calls``); the provider's reason otherwise."""
    if calls and finish is FinishReason.STOP:
        return FinishReason.TOOL_CALLS
    if not calls and finish is FinishReason.TOOL_CALLS:
        return FinishReason.STOP  # a tool-call stop with no call in it: nothing to answer
    return finish


def as_text(messages: Sequence[PromptMessage]) -> list[PromptMessage]:
    """``messages`` with tool calls and results written out as plain text."""
    out: list[PromptMessage] = []
    for message in messages:
        if message.role == "tool":
            out.append(result_as_text(message))
        elif message.tool_calls:
            lines = [f"[called {c.tool} with {arguments_json(c)}]" for c in message.tool_calls]
            text = "\n".join([message.content, *lines] if message.content else lines)
            out.append(dataclasses.replace(message, content=text, tool_calls=()))
        else:
            out.append(message)
    return out


def _parse(raw: str) -> tuple[dict[str, Any], str]:
    """The arguments and, when they are not a JSON object, why."""
    if not raw.strip():
        return {}, ""
    try:
        value = json.loads(raw, parse_constant=_no_constant)
        finite = _finite(value)
    except RecursionError:
        return {}, "The arguments are nested too deeply."
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return {}, f"The arguments are not valid JSON ({detail}): {_quote(raw)}"
    if not isinstance(value, dict):
        return {}, f"The arguments must be a JSON object, not {_quote(raw)}"
    if not finite:
        return {}, "The arguments hold a number out of range."
    return value, ""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # 1e999 parses as inf
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _quote(raw: str) -> str:
    text = raw.strip()
    return repr(text if len(text) <= _QUOTED else text[:_QUOTED] + "…")


def _frozen(arguments: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(arguments))
