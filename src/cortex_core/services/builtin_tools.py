"""The built-in tools (``cortex.*``): Cortex's own use cases as a ToolSource.

Each call acts as ``ToolContext.user_id`` in ``ToolContext.workspace_id`` through
the same use cases and access checks as the RPCs (a non-member gets
WORKSPACE_NOT_FOUND, a viewer EDITOR_REQUIRED where the use case writes). Input the
JSON Schema admits but the use case refuses (a query of stop words only) is
InvalidArgument with the violations under ``input``. None needs approval.

* ``cortex.search_memories``: the workspace's memories most relevant to a query.
* ``cortex.remember``: store a memory (a fact unless another kind is given).
* ``cortex.current_time``: the time now (the Clock port), in UTC or a named zone.
"""

from __future__ import annotations

import asyncio
import zoneinfo
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from cortex_core import errors
from cortex_core.domain.memories import MAX_CONTENT, MAX_QUERY, Memory, MemoryKind
from cortex_core.domain.tools import BUILTIN_SERVER, ToolContext, ToolSpec
from cortex_core.ports import Clock
from cortex_core.services.memories import Memories

BUILTIN_TIMEOUT = 10.0
MAX_SEARCH_RESULTS = 20
_KINDS = [kind.value for kind in MemoryKind]

_MEMORY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "workspaces/{w}/memories/{m}"},
        "content": {"type": "string"},
        "kind": {"enum": _KINDS},
        "create_time": {"type": "string", "format": "date-time"},
        "stale": {"type": "boolean", "description": "its source messages were deleted"},
    },
    "required": ["name", "content", "kind", "create_time", "stale"],
    "additionalProperties": False,
}


def _spec(name: str, description: str, input_schema: dict[str, Any], output_schema: dict[str, Any],
          *, idempotent: bool) -> ToolSpec:  # fmt: skip
    return ToolSpec(
        id=f"{BUILTIN_SERVER}.{name}",
        server=BUILTIN_SERVER,
        remote_name=name,
        display_name=name.replace("_", " ").capitalize(),
        description=description,
        input_schema={"$schema": "https://json-schema.org/draft/2020-12/schema", **input_schema},
        output_schema=output_schema,
        idempotent=idempotent,
        timeout=BUILTIN_TIMEOUT,
    )


SEARCH_MEMORIES = _spec(
    "search_memories",
    "Search this workspace's long-term memories by words; the most relevant come first.",
    {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY},
            "kind": {"enum": _KINDS, "description": "only memories of this kind"},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_RESULTS},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "memories": {
                "type": "array",
                "items": {
                    **_MEMORY,
                    "properties": {**_MEMORY["properties"], "score": {"type": "number"}},  # type: ignore[dict-item]
                    "required": [*_MEMORY["required"], "score"],  # type: ignore[misc]
                },
            }
        },
        "required": ["memories"],
        "additionalProperties": False,
    },
    idempotent=True,
)

REMEMBER = _spec(
    "remember",
    "Store a memory in this workspace (a fact unless another kind is given), for later replies.",
    {
        "type": "object",
        "properties": {
            "content": {"type": "string", "minLength": 1, "maxLength": MAX_CONTENT},
            "kind": {"enum": _KINDS, "default": MemoryKind.FACT.value},
        },
        "required": ["content"],
        "additionalProperties": False,
    },
    {**_MEMORY, "properties": {"memory": _MEMORY}, "required": ["memory"]},
    idempotent=False,
)

CURRENT_TIME = _spec(
    "current_time",
    "The current date and time, in UTC or in the given IANA time zone.",
    {
        "type": "object",
        "properties": {
            "timezone": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "an IANA zone such as Europe/Paris; UTC by default",
            },
        },
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "time": {"type": "string", "format": "date-time"},
            "timezone": {"type": "string"},
            "unix_seconds": {"type": "number"},
        },
        "required": ["time", "timezone", "unix_seconds"],
        "additionalProperties": False,
    },
    idempotent=True,
)

Handler = Callable[[Mapping[str, Any], ToolContext], Awaitable[Mapping[str, Any]]]


class BuiltinTools:
    """The ``cortex`` tool source."""

    def __init__(self, *, memories: Memories, clock: Clock) -> None:
        self._memories = memories
        self._clock = clock
        self._handlers: dict[str, Handler] = {
            SEARCH_MEMORIES.id: self._search_memories,
            REMEMBER.id: self._remember,
            CURRENT_TIME.id: self._current_time,
        }
        self._tools = (CURRENT_TIME, REMEMBER, SEARCH_MEMORIES)

    @property
    def server(self) -> str:
        return BUILTIN_SERVER

    def tools(self) -> Sequence[ToolSpec]:
        return self._tools

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""

    async def call(
        self,
        tool: ToolSpec,
        arguments: Mapping[str, Any],
        context: ToolContext,
        *,
        time_limit: float,
    ) -> Mapping[str, Any]:
        handler = self._handlers.get(tool.id)
        if handler is None:
            raise errors.NotFound(f"tool {tool.id!r} not found", reason="TOOL_NOT_FOUND")
        try:
            async with asyncio.timeout(time_limit):
                return await handler(arguments, context)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"tool {tool.id!r} did not finish within {time_limit:g} s", reason="TOOL_TIMEOUT"
            ) from None
        except errors.InvalidArgument as exc:
            raise _under_input(exc) from None

    async def _search_memories(
        self, arguments: Mapping[str, Any], context: ToolContext
    ) -> Mapping[str, Any]:
        kind = arguments.get("kind")
        page = await self._memories.search(
            context,
            context.workspace_id,
            str(arguments["query"]),
            MemoryKind(kind) if kind else None,
            int(arguments.get("limit", 5)),
            "",
        )
        return {"memories": [{**_memory(hit.memory), "score": hit.score} for hit in page.items]}

    async def _remember(
        self, arguments: Mapping[str, Any], context: ToolContext
    ) -> Mapping[str, Any]:
        created = await self._memories.create(
            context,
            context.workspace_id,
            content=str(arguments["content"]),
            kind=MemoryKind(arguments.get("kind", MemoryKind.FACT.value)),
            ttl=None,
            source_messages=(),
        )
        return {"memory": _memory(created)}

    async def _current_time(
        self, arguments: Mapping[str, Any], context: ToolContext
    ) -> Mapping[str, Any]:
        now = self._clock.now()
        name = str(arguments.get("timezone", "UTC"))
        try:
            zone = zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise errors.ToolFailed(
                f"unknown time zone {name[:64]!r}", metadata={"code": "UNKNOWN_TIMEZONE"}
            ) from None
        return {
            "time": now.astimezone(zone).isoformat(),
            "timezone": name,
            "unix_seconds": now.timestamp(),
        }


def _memory(memory: Memory) -> dict[str, Any]:
    return {
        "name": memory.name,
        "content": memory.content,
        "kind": memory.kind.value,
        "create_time": memory.create_time.isoformat(),
        "stale": memory.stale,
    }


def _under_input(error: errors.InvalidArgument) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        error.message,
        [
            errors.FieldViolation(f"input.{v.field}", v.description, v.reason)
            for v in error.violations
        ],
        reason=error.reason,
        metadata=error.metadata,
    )
