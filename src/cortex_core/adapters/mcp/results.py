"""What an MCP server lists and answers, as Cortex's tools and outcomes.

* A listed tool becomes a :class:`ToolSpec` ``<server>.<name>`` with the server's
  input and output schemas, and the configuration's approval, idempotency and
  timeout (a tool the server marks ``idempotentHint`` or ``readOnlyHint`` is
  idempotent too).
* A result becomes a JSON object: its ``structuredContent`` when the server sent
  one, else ``{"content": [...]}`` with each content block as its MCP JSON.
* A result with ``isError`` becomes :class:`errors.ToolFailed`: the text the tool
  gave, cut where a stack trace starts, on one line and trimmed; its ``code``
  (``structuredContent.code``, when a string or number) in the error's metadata.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import jsonschema
import mcp_types as types

from cortex_core import errors
from cortex_core.adapters.mcp.config import McpServerConfig
from cortex_core.domain.tools import TOOL_ID, ToolSpec

log = logging.getLogger(__name__)

MAX_FAILURE_TEXT = 512
_SPACE = re.compile(r"\s+")
# Where a stack trace starts: Python's header or frame lines, JavaScript's and Java's frames.
_STACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"|^\s+at \S", re.MULTILINE)


def tool_specs(config: McpServerConfig, listed: Iterable[types.Tool]) -> tuple[ToolSpec, ...]:
    """The exposed tools, ordered by id; names Cortex cannot address are skipped (logged)."""
    specs: dict[str, ToolSpec] = {}
    for tool in listed:
        if not config.exposes(tool.name):
            continue
        tool_id = f"{config.name}.{tool.name}"
        if not TOOL_ID.match(tool_id):
            log.warning("MCP server %s lists a tool Cortex cannot name: %r", config.name, tool.name)
            continue
        if not _usable_schemas(tool):
            log.warning(
                "MCP server %s lists %r with an invalid JSON Schema", config.name, tool.name
            )
            continue
        hints = tool.annotations
        hinted = bool(hints and (hints.idempotent_hint or hints.read_only_hint))
        specs[tool_id] = ToolSpec(
            id=tool_id,
            server=config.name,
            remote_name=tool.name,
            display_name=tool.title or (hints.title if hints and hints.title else "") or tool.name,
            description=tool.description or "",
            input_schema=dict(tool.input_schema),
            output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
            requires_approval=config.needs_approval(tool.name),
            idempotent=tool.name in config.idempotent or hinted,
            timeout=config.timeout_of(tool.name),
        )
    return tuple(specs[key] for key in sorted(specs))


def _usable_schemas(tool: types.Tool) -> bool:
    """Whether the tool's schemas are valid JSON Schemas (a call could not be checked)."""
    for schema in (tool.input_schema, tool.output_schema):
        if schema is None:
            continue
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except (jsonschema.SchemaError, TypeError, ValueError):
            return False
    return True


def output_of(tool: ToolSpec, result: types.CallToolResult) -> Mapping[str, Any]:
    """The call's output; raise ToolFailed for a result with ``isError``."""
    if result.is_error:
        raise failure(tool, result)
    if isinstance(result.structured_content, dict):
        return result.structured_content
    return {"content": [_block(block) for block in result.content]}


def failure(tool: ToolSpec, result: types.CallToolResult) -> errors.ToolFailed:
    texts = [block.text for block in result.content if isinstance(block, types.TextContent)]
    said = _SPACE.sub(" ", _without_stack("\n".join(texts))).strip() or "the tool reported an error"
    if len(said) > MAX_FAILURE_TEXT:
        said = said[: MAX_FAILURE_TEXT - 1] + "…"
    metadata = {"tool": tool.id}
    structured = result.structured_content
    code = structured.get("code") if isinstance(structured, dict) else None
    if isinstance(code, str | int) and not isinstance(code, bool):
        metadata["code"] = str(code)[:64]
    return errors.ToolFailed(said, metadata=metadata)


def _without_stack(text: str) -> str:
    """The text before any stack trace in it (a tool's error is shown to clients)."""
    found = _STACK.search(text)
    return text[: found.start()] if found else text


def _block(block: types.ContentBlock) -> dict[str, Any]:
    return block.model_dump(mode="json", by_alias=True, exclude_none=True)
