"""A real MCP server for tests and benchmarks, built with the SDK's server side.

Run it as ``python -m tests.support.mcp_servers --transport stdio`` (Cortex starts it as a
child process) or ``--transport http --port N`` (Streamable HTTP at ``/mcp``), from
the ``tests`` directory or with it on ``PYTHONPATH``. ``--record FILE`` is where it
writes what happened (one line per event: ``started <marker>``, ``cancelled
<marker>``, ``finished <marker>``), so a test can prove the server saw a
cancellation; ``--pid-file FILE`` receives its process id (to kill it mid-call).

Tools: ``echo`` (structured output), ``slow`` (reports progress and sleeps),
``fail`` (a result with ``isError`` and a code), ``count`` (counts its calls and
says how many so far), ``hang`` (blocks the whole server: it answers nothing, not
even a cancellation, for that long), ``change_tools`` (adds a tool and says the
list changed), ``plain`` (unstructured text content).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import TypedDict

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations


class Echoed(TypedDict):
    text: str


class Counted(TypedDict):
    calls: int


class Slept(TypedDict):
    slept: float
    marker: str


def build(record: Path | None) -> MCPServer:
    server = MCPServer("cortex-test", log_level="ERROR")
    calls = 0

    def note(line: str) -> None:
        if record is not None:
            with record.open("a") as f:
                f.write(line + "\n")

    @server.tool()
    def echo(text: str) -> Echoed:
        """Return the text it was given."""
        return {"text": text}

    @server.tool()
    async def slow(seconds: float, ctx: Context, marker: str = "") -> Slept:
        """Report progress, then sleep for `seconds`."""
        note(f"started {marker}")
        try:
            await ctx.report_progress(0, seconds)
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            note(f"cancelled {marker}")
            raise
        note(f"finished {marker}")
        return {"slept": seconds, "marker": marker}

    @server.tool()
    def fail(code: str = "QUOTA_EXCEEDED", message: str = "quota exceeded") -> CallToolResult:
        """Always fail, with the given code and message."""
        return CallToolResult(
            content=[TextContent(type="text", text=message)],
            structured_content={"code": code},
            is_error=True,
        )

    @server.tool()
    def count() -> Counted:
        """Count this call; return how many calls so far."""
        nonlocal calls
        calls += 1
        return {"calls": calls}

    @server.tool()
    def hang(seconds: float) -> str:
        """Block the whole server for `seconds` (a hung server)."""
        note("hanging")
        time.sleep(seconds)
        return "woke up"

    @server.tool()
    async def change_tools(ctx: Context) -> str:
        """Add the tool `added` and tell the client the list changed."""

        @server.tool()
        def added() -> str:
            """A tool that did not exist at first."""
            return "added"

        # 2025 protocol versions: a notification on the session; 2026: the listen stream.
        with contextlib.suppress(Exception):  # not deliverable at this protocol version
            await ctx.request_context.session.send_tool_list_changed()
        await ctx.notify_tools_changed()
        return "changed"

    @server.tool(structured_output=False, annotations=ToolAnnotations(readOnlyHint=True))
    def plain() -> str:
        """Unstructured text."""
        return "just text"

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--pid-file", type=Path)
    args = parser.parse_args(argv)
    if args.pid_file is not None:
        args.pid_file.write_text(str(os.getpid()))
    server = build(args.record)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", port=args.port)


if __name__ == "__main__":
    sys.exit(main())
