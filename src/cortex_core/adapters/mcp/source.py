"""One MCP server as a :class:`~cortex_core.ports.ToolSource`, over the official SDK.

**One owner task per server.** The SDK's session lives in anyio task groups and
cancel scopes, which must be entered and left by the same task: a session shared by
the tasks of concurrent RPCs breaks ("exited non-innermost cancel scope"), and a
caller's cancellation would tear down everyone's connection. So exactly one
long-lived task, :meth:`McpToolSource.run`, opens the transport and the session and
owns them. Callers hand it a request through a per-session queue and wait for a
per-call future; the owner runs each ``tools/call`` in a child task of its own task
group, inside a cancel scope of that call alone.

**Deadlines everywhere.** Connecting (spawn or HTTP connect, ``initialize`` or
``server/discover``) and the first ``tools/list`` share ``connect_timeout``; each
later listing has the same bound; a call waits at most its ``time_limit``
(DEADLINE_EXCEEDED, TOOL_TIMEOUT), whatever the server does. A server that is down,
or whose session ends mid-call, is UNAVAILABLE/TOOL_UNAVAILABLE with the time until
the next connection attempt as ``retry_after``.

**Cancellation.** When the awaiting caller is cancelled or its deadline passes, the
call's own scope is cancelled in the owner task: the SDK then sends
``notifications/cancelled`` with the request id (stdio, and HTTP on 2025 protocol
versions) or aborts that request's HTTP stream (Streamable HTTP at 2026-07-28),
and the caller waits (at most :data:`ABANDON_WAIT` seconds) for that before its
cancellation propagates.

**Reconnection.** :meth:`run` is one session's life and always ends by raising
``Unavailable``: when the connection cannot be made, when it ends (the process
exits, the HTTP endpoint drops; noticed through :class:`WatchedTransport`), or
when a probe (``tools/list`` every ``probe_interval`` seconds) or the
``subscriptions/listen`` stream fails. The supervisor runs it as a loop and
reconnects with backoff and jitter. ``tools()`` keeps the last listing while the
server is down, so its tools answer UNAVAILABLE (not NOT_FOUND) until it is back.

**Discovery.** ``tools/list`` with every page, at connect, on
``notifications/tools/list_changed`` (2025 protocol versions) or a
``subscriptions/listen`` tools event (2026-07-28), and at every probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from cortex_core import __version__, errors
from cortex_core.adapters.mcp.config import McpServerConfig
from cortex_core.adapters.mcp.results import output_of, tool_specs
from cortex_core.adapters.mcp.transport import WatchedTransport, sdk_transport
from cortex_core.domain.tools import ToolContext, ToolSpec

log = logging.getLogger(__name__)

#: Seconds a cancelled caller waits for the cancellation to reach the server.
ABANDON_WAIT = 2.0
#: Pages of ``tools/list`` read at most (a server that never stops paging cannot hang us).
MAX_LIST_PAGES = 100
CLIENT_INFO = types.Implementation(name="cortex-core", version=__version__)

StateObserver = Callable[[str, bool], Awaitable[None]]
RetryHint = Callable[[], "float | None"]


async def _ignore(server: str, up: bool) -> None:
    return None


def _no_hint() -> float | None:
    return None


@dataclasses.dataclass(eq=False)
class _Call:
    """One request handed to the owner task; ``done`` is set once it is over on
    the owner's side (answered, failed, or cancelled on the server)."""

    tool: ToolSpec
    arguments: dict[str, Any]
    future: asyncio.Future[Mapping[str, Any]]
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    scope: anyio.CancelScope | None = None
    abandoned: bool = False

    def resolve(self, output: Mapping[str, Any]) -> None:
        if not self.future.done() and not self.abandoned:
            self.future.set_result(output)

    def fail(self, error: errors.CortexError) -> None:
        if not self.future.done() and not self.abandoned:
            self.future.set_exception(error)

    def abandon(self) -> None:
        """The caller gave up: cancel the call where it runs (or before it starts)."""
        self.abandoned = True
        if self.scope is not None:
            self.scope.cancel()
        if self.future.done() and not self.future.cancelled():
            self.future.exception()  # retrieved: nobody will await it now


class McpToolSource:
    """The tools of the MCP server configured as ``[servers.<name>]``.

    ``on_state(server, up)`` is awaited when the session comes up or goes down
    (health publishes ``cortex.tools.<server>``); ``retry_hint()`` says in how
    many seconds the next connection attempt is due (the supervisor knows).
    """

    def __init__(
        self,
        config: McpServerConfig,
        *,
        on_state: StateObserver = _ignore,
        retry_hint: RetryHint = _no_hint,
    ) -> None:
        self._config = config
        self._on_state = on_state
        self._retry_hint = retry_hint
        self._tools: tuple[ToolSpec, ...] = ()
        self._inbox: asyncio.Queue[_Call] | None = None  # set while a session is up
        self._changed = asyncio.Event()

    @property
    def server(self) -> str:
        return self._config.name

    @property
    def loop_name(self) -> str:
        """The supervised loop that owns the session (``cortex.background.<loop_name>``)."""
        return loop_name(self._config.name)

    @property
    def connected(self) -> bool:
        return self._inbox is not None

    def tools(self) -> Sequence[ToolSpec]:
        return self._tools

    async def start(self) -> None:
        """Nothing to do: the supervisor starts :meth:`run` (it never blocks the start)."""

    async def close(self) -> None:
        """Nothing to do: cancelling :meth:`run` closes the session and stops the process."""

    # --- callers ---------------------------------------------------------------------

    async def call(
        self,
        tool: ToolSpec,
        arguments: Mapping[str, Any],
        context: ToolContext,
        *,
        time_limit: float,
    ) -> Mapping[str, Any]:
        inbox = self._inbox
        if inbox is None:
            raise self._down("is not connected")
        call = _Call(tool, dict(arguments), asyncio.get_running_loop().create_future())
        inbox.put_nowait(call)
        try:
            async with asyncio.timeout(time_limit):
                return await asyncio.shield(call.future)
        except TimeoutError:
            await self._abandon(call)
            raise errors.DeadlineExceeded(
                f"tool {tool.id!r} did not answer within {time_limit:g} s", reason="TOOL_TIMEOUT"
            ) from None
        except asyncio.CancelledError:
            await self._abandon(call)
            raise

    @staticmethod
    async def _abandon(call: _Call) -> None:
        call.abandon()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ABANDON_WAIT):
                await call.done.wait()

    def _down(self, why: str) -> errors.Unavailable:
        error = errors.Unavailable(
            f"MCP server {self._config.name!r} {why}", reason="TOOL_UNAVAILABLE"
        )
        error.retry_after = self._retry_hint()
        return error

    # --- the owner ---------------------------------------------------------------------

    async def run(self) -> None:
        """One session, start to end; always raises ``Unavailable`` (supervisor step)."""
        config = self._config
        transport = WatchedTransport(sdk_transport(config))
        inbox: asyncio.Queue[_Call] = asyncio.Queue()
        self._changed.clear()
        try:
            with anyio.CancelScope() as connecting:
                connecting.deadline = anyio.current_time() + config.connect_timeout
                async with Client(
                    transport,
                    mode=config.mode,
                    message_handler=self._on_message,
                    client_info=CLIENT_INFO,
                    cache=None,
                ) as client:
                    self._tools = await self._list(client)
                    connecting.deadline = math.inf
                    self._inbox = inbox
                    log.info(
                        "MCP server %s connected (%s, protocol %s, %d tools)",
                        config.name,
                        config.transport,
                        client.protocol_version,
                        len(self._tools),
                    )
                    await self._on_state(config.name, True)
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._serve, client, inbox, group)
                        group.start_soon(self._keep_listing, client)
                        if _listens(client):
                            group.start_soon(self._listen, client)
                        await transport.ended.wait()
                        raise self._down("closed the connection")
            if connecting.cancelled_caught:
                raise self._down(f"did not connect within {config.connect_timeout:g} s")
        except Exception as exc:  # noqa: BLE001 - the SDK's and the transport's failures alike
            leaf = _leaf(exc)
            if isinstance(leaf, errors.CortexError):
                raise leaf from None
            raise self._down(f"failed ({_describe(leaf)})") from None
        finally:
            was_up = self._inbox is inbox
            self._inbox = None
            down = self._down("disconnected")
            while not inbox.empty():
                queued = inbox.get_nowait()
                queued.fail(down)
                queued.done.set()
            if was_up:
                log.warning("MCP server %s disconnected", config.name)
                await self._on_state(config.name, False)
        raise self._down("closed the connection")

    async def _serve(
        self, client: Client, inbox: asyncio.Queue[_Call], group: anyio.abc.TaskGroup
    ) -> None:
        while True:
            call = await inbox.get()
            if call.abandoned:
                call.done.set()
                continue
            group.start_soon(self._perform, client, call)

    async def _perform(self, client: Client, call: _Call) -> None:
        try:
            with anyio.CancelScope() as scope:
                call.scope = scope
                if call.abandoned:
                    scope.cancel()
                result = await client.call_tool(call.tool.remote_name, call.arguments)
                call.resolve(output_of(call.tool, result))
        except errors.CortexError as exc:
            call.fail(exc)
        except MCPError as exc:
            call.fail(self._mcp_error(call.tool, exc))
        except Exception as exc:  # noqa: BLE001 - e.g. output that breaks its own schema
            log.warning("MCP tool %s gave an unusable answer: %s", call.tool.id, _describe(exc))
            call.fail(
                errors.ToolFailed(
                    f"tool {call.tool.id!r} gave an answer Cortex cannot use",
                    metadata={"tool": call.tool.id, "code": "INVALID_RESULT"},
                )
            )
        finally:
            call.fail(self._down("disconnected during the call"))
            call.done.set()

    def _mcp_error(self, tool: ToolSpec, exc: MCPError) -> errors.CortexError:
        if exc.code == types.CONNECTION_CLOSED:
            return self._down("disconnected during the call")
        if exc.code == types.REQUEST_TIMEOUT:
            return errors.DeadlineExceeded(f"tool {tool.id!r} timed out", reason="TOOL_TIMEOUT")
        message = " ".join(str(exc.error.message).split())[:256] or "the server refused the call"
        return errors.ToolFailed(message, metadata={"tool": tool.id, "code": str(exc.code)})

    async def _list(self, client: Client) -> tuple[ToolSpec, ...]:
        listed: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            page = await client.list_tools(cursor=cursor)
            listed.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tool_specs(self._config, listed)

    async def _keep_listing(self, client: Client) -> None:
        """Refresh on a change and probe every ``probe_interval``; a failure ends the session."""
        while True:
            with anyio.move_on_after(self._config.probe_interval):
                await self._changed.wait()
            self._changed.clear()
            try:
                with anyio.fail_after(self._config.connect_timeout):
                    tools = await self._list(client)
            except TimeoutError:
                raise self._down("stopped answering tools/list") from None
            if tools != self._tools:
                log.info("MCP server %s now lists %d tools", self._config.name, len(tools))
            self._tools = tools

    async def _listen(self, client: Client) -> None:
        async with client.listen(tools_list_changed=True) as subscription:
            async for _ in subscription:
                self._changed.set()
        raise self._down("ended its change subscription")

    async def _on_message(self, message: types.ServerNotification | Exception) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            self._changed.set()
        elif isinstance(message, Exception):
            log.debug("MCP server %s sent something unreadable: %s", self._config.name, message)


def loop_name(server: str) -> str:
    """The name of the supervised loop that owns the session of ``server``."""
    return f"mcp-{server}"


def _listens(client: Client) -> bool:
    """Whether change events come on a ``subscriptions/listen`` stream (2026-07-28)."""
    tools = client.server_capabilities.tools
    return (
        bool(tools and tools.list_changed) and client.protocol_version in MODERN_PROTOCOL_VERSIONS
    )


def _leaf(error: BaseException) -> BaseException:
    """The first leaf of (nested) exception groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _describe(error: BaseException) -> str:
    """One short line for the logs (never sent to a client)."""
    error = _leaf(error)
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
