"""Tools: what a reply, an expert or ``InvokeTool`` can call, and the calls themselves.

A tool is named ``<server>.<name>``: ``cortex.<name>`` for a built-in tool over
Cortex's own use cases, ``<server>.<name>`` for a tool of the MCP server
configured as ``[servers.<server>]`` (its resource name is ``tools/<id>``).
Model providers get a name they accept (``function_name``) and map it back.

The calls and results are plain data so that they can be stored with messages,
journaled with tasks and sent as frames and events unchanged.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

BUILTIN_SERVER = "cortex"
DEFAULT_TIMEOUT = 30.0  # seconds a call may run when the configuration says nothing
MAX_CONVERSATION_TOOLS = 64

# `<server>.<name>`: a server slug, then the tool's own name as its server spells it
# (MCP allows letters, digits, `_`, `-` and `.`).
TOOL_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}\.[A-Za-z0-9_.-]{1,128}$")

JsonObject = Mapping[str, Any]


def _frozen(value: JsonObject | None) -> JsonObject:
    return MappingProxyType(dict(value or {}))


@dataclasses.dataclass(frozen=True, slots=True)
class ToolSpec:
    """One callable tool as listed by ``ListTools``."""

    id: str  # `<server>.<name>`; the resource name is `tools/<id>`
    server: str  # BUILTIN_SERVER or the MCP server's configured name
    remote_name: str  # the name its server knows it by
    display_name: str
    description: str
    input_schema: JsonObject
    output_schema: JsonObject | None = None
    requires_approval: bool = False
    idempotent: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @property
    def function_name(self) -> str:
        """A name every model API accepts (``^[A-Za-z0-9_-]{1,64}$``); unique per id."""
        return function_name(self.id)


def function_name(tool_id: str) -> str:
    """``search.web_search`` → ``search__web_search`` (dots are not allowed by model APIs)."""
    return tool_id.replace(".", "__")[:64]


class ToolCallState(enum.Enum):
    PENDING_APPROVAL = "pending_approval"
    CALLED = "called"
    DENIED = "denied"


@dataclasses.dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for: ``tool`` is a tool id, ``arguments`` a JSON object.

    ``error`` is set by the model provider when the call cannot run as the model
    wrote it, and is then the call's result (nothing is invoked): an unknown
    tool name (``TOOL_NOT_FOUND``; ``tool`` is the name as the model wrote it,
    which never resolves to a tool id) or arguments that are not a JSON object
    (``INVALID_TOOL_INPUT``; ``arguments`` is empty and the message quotes the
    start of the model's text). Stored calls have no error.
    """

    id: str
    tool: str
    arguments: JsonObject = dataclasses.field(default_factory=lambda: _frozen(None))
    state: ToolCallState = ToolCallState.CALLED
    error: ToolError | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ToolError:
    """Why a call produced no output. ``reason`` is one of the TOOL_* reasons in
    docs/contracts.md; ``message`` is safe to show to the caller and the model;
    ``code`` is the tool's own error code, when it gave one."""

    reason: str
    message: str
    code: str = ""
    retry_after: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of one call: exactly one of ``output`` and ``error`` is set."""

    call_id: str
    tool: str
    output: JsonObject | None = None
    error: ToolError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass(frozen=True, slots=True)
class ToolContext:
    """Who a call is made for: built-in tools act as ``user_id`` in ``workspace_id``."""

    workspace_id: str
    user_id: str
    conversation_id: str = ""


class ApprovalDecision(enum.Enum):
    APPROVE = "approve"
    DENY = "deny"


def result_text(result: ToolResult) -> str:
    """What the model is told about ``result``: the output as compact JSON, or
    ``{"error": {"reason": ..., "message": ...}}`` when it produced none."""
    if result.error is None:
        return json.dumps(dict(result.output or {}), separators=(",", ":"), default=str)
    error = {"reason": result.error.reason, "message": result.error.message}
    return json.dumps({"error": error}, separators=(",", ":"))


def failed_result(call: ToolCall, reason: str, message: str) -> ToolResult:
    """The result of a call that did not run (denied, not allowed, cancelled)."""
    return ToolResult(
        call_id=call.id, tool=call.tool, error=ToolError(reason=reason, message=message)
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ToolApproval:
    """A person's decision on one pending call (``decision`` None: not given)."""

    call_id: str
    decision: ApprovalDecision | None
