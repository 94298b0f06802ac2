"""The SDK transport of one configured server, watched so that its end is noticed.

``mcp``'s session does not say when its connection ends: the dispatcher's read loop
simply returns (a stdio server that exited, an HTTP stream that closed) and every
later request fails. :class:`WatchedTransport` wraps the SDK's own transport
(``stdio_client`` or ``streamable_http_client``) and sets an event the moment the
read side reaches its end, so the session's owner can tear down and reconnect at
once, and health can say so, without waiting for the next call.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Self

import anyio
import httpx2
from mcp.client._transport import ReadStream, TransportStreams
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage

from cortex_core.adapters.mcp.config import McpServerConfig

_ENDED = (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError)


def sdk_transport(config: McpServerConfig) -> AbstractAsyncContextManager[TransportStreams]:
    """The SDK's transport for ``config``: the child process (stdio) or the HTTP client."""
    if config.transport == "stdio":
        return stdio_client(
            StdioServerParameters(
                command=config.command,
                args=list(config.args),
                env=dict(config.env) or None,
                cwd=config.cwd or None,
            )
        )
    return _http(config)


@contextlib.asynccontextmanager
async def _http(config: McpServerConfig) -> AsyncIterator[TransportStreams]:
    # Our own client, for the configured headers; connecting is bounded by the
    # session's connect deadline, and each call by its own deadline.
    timeout = httpx2.Timeout(config.connect_timeout, read=None)
    async with (
        httpx2.AsyncClient(headers=dict(config.headers), timeout=timeout) as client,
        streamable_http_client(config.url, http_client=client) as streams,
    ):
        yield streams


class WatchedTransport:
    """A transport (``mcp.client.Transport``) that sets ``ended`` when its read side ends."""

    def __init__(self, inner: AbstractAsyncContextManager[TransportStreams]) -> None:
        self._inner = inner
        self.ended = anyio.Event()

    async def __aenter__(self) -> TransportStreams:
        read, write = await self._inner.__aenter__()
        return _WatchedRead(read, self.ended), write

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.ended.set()
        return await self._inner.__aexit__(exc_type, exc, tb)


class _WatchedRead:
    """The read stream, unchanged, but for setting ``ended`` when it ends."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], ended: anyio.Event) -> None:
        self._inner = inner
        self._ended = ended

    @property
    def last_context(self) -> Any:
        # The SDK reads it by duck typing (the sender's contextvars, on HTTP).
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except _ENDED:
            self._ended.set()
            raise

    async def aclose(self) -> None:
        self._ended.set()
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
