"""A ``ToolSource`` for tests (a port double): tools with real behaviour, and a
record of what each call saw.

Tools of server ``testing``:

* ``testing.echo``: returns ``{"echo": <arguments>}``.
* ``testing.slow``: waits ``seconds`` (default 30) and returns ``{"slept": seconds}``;
  records when a call started, how many ran at once, and when one was cancelled.
  Like a real source, it stops at its ``time_limit`` with TOOL_TIMEOUT.
* ``testing.guarded``: like echo, but ``requires_approval``.
* ``testing.broken``: always fails (``ToolFailed``, code ``E_BROKEN``).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Mapping, Sequence
from typing import Any

from cortex_core import errors
from cortex_core.domain.tools import ToolContext, ToolSpec

_OBJECT = {"type": "object"}
SERVER = "testing"


def _tool(server: str, name: str, description: str, **extra: Any) -> ToolSpec:
    return ToolSpec(
        id=f"{server}.{name}",
        server=server,
        remote_name=name,
        display_name=name,
        description=description,
        input_schema=extra.pop("input_schema", _OBJECT),
        **extra,
    )


class RecordingTools:
    """The ``testing`` server (or another name): in process, deterministic, observable."""

    def __init__(self, server: str = SERVER) -> None:
        self._server = server
        self._tools = (
            _tool(server, "echo", "Returns its arguments."),
            _tool(
                server,
                "slow",
                "Waits, then answers.",
                input_schema={"type": "object", "properties": {"seconds": {"type": "number"}}},
            ),
            _tool(
                server,
                "guarded",
                "Returns its arguments, once a person approves.",
                requires_approval=True,
            ),
            _tool(server, "broken", "Always fails."),
        )
        self.calls: collections.Counter[str] = collections.Counter()
        self.contexts: list[ToolContext] = []
        self.slow_started = asyncio.Event()
        self.slow_cancelled = asyncio.Event()
        self.running = 0
        self.most_at_once = 0
        self.time_limits: list[float] = []  # of the calls stopped at their limit

    @property
    def server(self) -> str:
        return self._server

    def tools(self) -> Sequence[ToolSpec]:
        return self._tools

    async def call(
        self,
        tool: ToolSpec,
        arguments: Mapping[str, Any],
        context: ToolContext,
        *,
        time_limit: float,
    ) -> Mapping[str, Any]:
        self.calls[tool.remote_name] += 1
        self.contexts.append(context)
        if tool.remote_name == "broken":
            raise errors.ToolFailed(
                "the broken tool failed on purpose", metadata={"code": "E_BROKEN"}
            )
        if tool.remote_name != "slow":
            return {"echo": dict(arguments)}
        seconds = float(arguments.get("seconds", 30))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.slow_started.set()
        try:
            await asyncio.sleep(min(seconds, time_limit))
        except asyncio.CancelledError:
            self.slow_cancelled.set()
            raise
        finally:
            self.running -= 1
        if seconds > time_limit:
            self.time_limits.append(time_limit)
            raise errors.DeadlineExceeded(
                f"slow did not finish within {time_limit:g} s", reason="TOOL_TIMEOUT"
            )
        return {"slept": seconds}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
