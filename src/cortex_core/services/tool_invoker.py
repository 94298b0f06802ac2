"""The one invoker every tool call goes through: ``InvokeTool``, a reply's tool
loop and (next) an expert's task.

It owns what is the same for every caller, whoever serves the tool:

* **Lookup.** Tools are the union of every ``ToolSource``'s snapshot (the
  built-ins and each MCP server), ordered by id.
* **Validation.** Input is checked against the tool's input JSON Schema with the
  ``jsonschema`` library; every problem becomes one field violation under
  ``input`` (``input.city``, ``input`` for the whole object).
* **Deadlines.** A call runs for at most the tool's own timeout, or the caller's
  remaining time when that is sooner (``time_left``); past it, the source stops
  the call on the server and the result is TOOL_TIMEOUT.
* **Cancellation.** Cancelling the awaiting task cancels the call on the server
  (the source does it, the transport's own way) and propagates.

``invoke`` raises for what is the caller's fault (unknown tool, bad input) and
for a server that is down; ``run`` never raises for the tool's own outcome: it
returns a ``ToolResult`` whose ``error`` says what the model or client is told.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jsonschema.protocols

from cortex_core import errors
from cortex_core.domain.tools import ToolCall, ToolContext, ToolError, ToolResult, ToolSpec
from cortex_core.ports import Metrics, ToolSource
from cortex_core.services.json_schemas import compile_schema, violations
from cortex_core.services.telemetry import no_tracer, start_span

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger(__name__)

MAX_MESSAGE = 512  # characters of a tool's own error message kept


class ToolInvoker:
    def __init__(
        self,
        sources: Sequence[ToolSource],
        *,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._sources = {source.server: source for source in sources}
        self._tracer = tracer or no_tracer()
        self._metrics = metrics
        # Compiled validators by tool id, with the schema they were built from (a
        # refreshed listing brings a new schema object and a new validator).
        self._validators: dict[str, tuple[Mapping[str, Any], jsonschema.protocols.Validator]] = {}

    @property
    def sources(self) -> Sequence[ToolSource]:
        return tuple(self._sources.values())

    def tools(self) -> list[ToolSpec]:
        """Every tool any source offers now, ordered by id."""
        found = [tool for source in self._sources.values() for tool in source.tools()]
        return sorted(found, key=lambda tool: tool.id)

    def get(self, tool_id: str) -> ToolSpec | None:
        server, _, _ = tool_id.partition(".")
        source = self._sources.get(server)
        if source is None:
            return None
        return next((tool for tool in source.tools() if tool.id == tool_id), None)

    def require(self, tool_id: str) -> ToolSpec:
        tool = self.get(tool_id)
        if tool is None:
            raise errors.NotFound(f"tool {tool_id!r} not found", reason="TOOL_NOT_FOUND")
        return tool

    async def invoke(
        self,
        tool_id: str,
        arguments: Mapping[str, Any],
        context: ToolContext,
        *,
        time_left: float | None = None,
    ) -> Mapping[str, Any]:
        """Run one call and return its output.

        Raises NotFound (TOOL_NOT_FOUND), InvalidArgument (violations under
        ``input``), ToolFailed, DeadlineExceeded (TOOL_TIMEOUT) or Unavailable
        (TOOL_UNAVAILABLE, with retry_after).

        Each call is a ``tool.call`` span (tool, server, outcome: ``ok`` or the
        error's reason) and a ``cortex_tool_call_*`` observation."""
        server = tool_id.partition(".")[0]
        start = time.perf_counter()
        outcome = "cancelled"
        with start_span(
            self._tracer,
            "tool.call",
            attributes={"cortex.tool": tool_id, "cortex.tool.server": server},
        ) as span:
            try:
                output = await self._invoke(tool_id, arguments, context, time_left)
                outcome = "ok"
                return output
            except errors.CortexError as exc:
                outcome = exc.reason
                raise
            except Exception:
                outcome = "INTERNAL"
                raise
            finally:
                span.set_attribute("outcome", outcome)
                if self._metrics is not None:
                    self._metrics.tool_call(server, outcome, time.perf_counter() - start)

    async def _invoke(
        self,
        tool_id: str,
        arguments: Mapping[str, Any],
        context: ToolContext,
        time_left: float | None,
    ) -> Mapping[str, Any]:
        tool = self.require(tool_id)
        validate_input(tool, arguments, self._validator(tool))
        source = self._sources[tool.server]
        limit = tool.timeout if time_left is None else max(0.0, min(tool.timeout, time_left))
        try:
            async with asyncio.timeout(limit + 1.0):  # the source's own limit comes first
                return await source.call(tool, arguments, context, time_limit=limit)
        except TimeoutError:
            raise errors.DeadlineExceeded(
                f"tool {tool.id!r} did not answer within {limit:g} s", reason="TOOL_TIMEOUT"
            ) from None

    def _validator(self, tool: ToolSpec) -> jsonschema.protocols.Validator:
        cached = self._validators.get(tool.id)
        if cached is not None and cached[0] is tool.input_schema:
            return cached[1]
        validator = compile_schema(tool.input_schema)
        self._validators[tool.id] = (tool.input_schema, validator)
        return validator

    async def run(
        self, call: ToolCall, context: ToolContext, *, time_left: float | None = None
    ) -> ToolResult:
        """Run a model's call; every outcome is a ``ToolResult`` (cancellation propagates).

        A call the model provider could not read (``call.error``: malformed
        arguments, an unknown name) is answered with that error and never invoked."""
        if call.error is not None:
            return ToolResult(call_id=call.id, tool=call.tool, error=call.error)
        try:
            output = await self.invoke(call.tool, call.arguments, context, time_left=time_left)
        except errors.InvalidArgument as exc:
            detail = "; ".join(f"{v.field}: {v.description}" for v in exc.violations)
            return _failed(call, "INVALID_TOOL_INPUT", detail or exc.message)
        except errors.CortexError as exc:
            retry = exc.retry_after if isinstance(exc, errors.Unavailable) else None
            return _failed(
                call, exc.reason, exc.message, code=exc.metadata.get("code", ""), retry=retry
            )
        return ToolResult(call_id=call.id, tool=call.tool, output=output)


def _failed(
    call: ToolCall, reason: str, message: str, *, code: str = "", retry: float | None = None
) -> ToolResult:
    error = ToolError(reason=reason, message=message[:MAX_MESSAGE], code=code, retry_after=retry)
    return ToolResult(call_id=call.id, tool=call.tool, error=error)


def validate_input(
    tool: ToolSpec,
    arguments: Mapping[str, Any],
    validator: jsonschema.protocols.Validator | None = None,
) -> None:
    """Raise InvalidArgument with one violation per schema problem (at most 10)."""
    found = violations(validator or compile_schema(tool.input_schema), arguments, "input")
    if found:
        raise errors.InvalidArgument(f"input does not match the input schema of {tool.id!r}", found)
