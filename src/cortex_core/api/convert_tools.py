"""Tools as ``cortex.experts.v1`` protos, tool names, and JSON values both ways.

``google.protobuf.Struct`` holds every number as a double, so a whole number that
arrives in ``InvokeToolRequest.input`` is handed to the tool as a JSON integer
(``3``, not ``3.0``): that is what a schema's ``"type": "integer"`` and the tools
behind it expect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.experts.v1 import tool_pb2
from google.protobuf import duration_pb2, json_format, struct_pb2

from cortex_core import errors
from cortex_core.domain.tools import TOOL_ID, ToolSpec

TOOL_PREFIX = "tools/"
_EXACT_INTEGERS = 2**53  # beyond this a double no longer holds every whole number


def tool_id(name: str, field: str = "name") -> str:
    """``tools/search.web_search`` → ``search.web_search``; INVALID_ARGUMENT otherwise."""
    tool = name.removeprefix(TOOL_PREFIX)
    if not name.startswith(TOOL_PREFIX) or not TOOL_ID.match(tool):
        hint = "must look like tools/SERVER.TOOL"
        raise errors.InvalidArgument(
            f"{field} {hint}", [errors.FieldViolation(field, hint, "INVALID_NAME")]
        )
    return tool


def tool(value: ToolSpec) -> tool_pb2.Tool:
    timeout = duration_pb2.Duration()
    timeout.FromNanoseconds(round(value.timeout * 1e9))
    return tool_pb2.Tool(
        name=TOOL_PREFIX + value.id,
        display_name=value.display_name,
        description=value.description,
        input_schema=struct(value.input_schema),
        output_schema=struct(value.output_schema) if value.output_schema is not None else None,
        requires_approval=value.requires_approval,
        idempotent=value.idempotent,
        timeout=timeout,
        server=value.server,
    )


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def json_object(value: struct_pb2.Struct) -> dict[str, Any]:
    """The request's Struct as plain JSON, whole numbers as integers."""
    converted = _whole(json_format.MessageToDict(value))
    assert isinstance(converted, dict)
    return converted


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INTEGERS:
        return int(value)
    if isinstance(value, dict):
        return {key: _whole(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole(item) for item in value]
    return value
