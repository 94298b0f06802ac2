"""Tool calls and results as the JSON text stored with messages.

The text is versionless on purpose: every key is optional on the way in, so a
field added later reads back with its default from rows written before it.
"""

from __future__ import annotations

import json
from typing import Any

from cortex_core.domain.tools import ToolCall, ToolCallState, ToolError, ToolResult


def calls_json(calls: tuple[ToolCall, ...]) -> str:
    return json.dumps(
        [
            {"id": c.id, "tool": c.tool, "arguments": dict(c.arguments), "state": c.state.value}
            for c in calls
        ],
        separators=(",", ":"),
        default=str,
    )


def calls_of(text: str | None) -> tuple[ToolCall, ...]:
    return tuple(
        ToolCall(
            id=item["id"],
            tool=item["tool"],
            arguments=item.get("arguments") or {},
            state=ToolCallState(item.get("state", ToolCallState.CALLED.value)),
        )
        for item in json.loads(text or "[]")
    )


def result_json(result: ToolResult | None) -> str | None:
    if result is None:
        return None
    value: dict[str, Any] = {"call_id": result.call_id, "tool": result.tool}
    if result.error is not None:
        error = result.error
        value["error"] = {"reason": error.reason, "message": error.message, "code": error.code}
        if error.retry_after is not None:
            value["error"]["retry_after"] = error.retry_after
    else:
        value["output"] = dict(result.output or {})
    return json.dumps(value, separators=(",", ":"), default=str)


def result_of(text: str | None) -> ToolResult | None:
    if not text:
        return None
    value = json.loads(text)
    error = value.get("error")
    return ToolResult(
        call_id=value["call_id"],
        tool=value["tool"],
        output=value.get("output") if error is None else None,
        error=ToolError(
            reason=error["reason"],
            message=error.get("message", ""),
            code=error.get("code", ""),
            retry_after=error.get("retry_after"),
        )
        if error is not None
        else None,
    )
