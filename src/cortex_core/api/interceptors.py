"""The server's interceptor: request ids, the JSON access log and error mapping.

One interceptor wraps every handler once, so the per-call cost stays a single
extra coroutine frame. For each call it:

* assigns a request id (the caller's ``x-request-id`` when it is sane);
* turns request bytes that do not parse into ``INVALID_ARGUMENT``;
* maps :class:`~cortex_core.errors.CortexError` raised by a handler, unary or
  mid-stream, through :mod:`cortex_core.api.status`;
* turns any other exception into ``INTERNAL`` with a generic message, logging
  the traceback with the request id;
* ends open streams with ``UNAVAILABLE`` when the server drains;
* writes one access-log record: method, code, duration, peer, request id.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any

import grpc
import grpc.aio

from cortex_core import errors
from cortex_core.api import status
from cortex_core.api.streams import SHUTDOWN_MESSAGE, StreamRegistry

access_log = logging.getLogger("cortex.access")
error_log = logging.getLogger("cortex.errors")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "cortex_request_id", default=""
)

_REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128


class _Malformed:
    """Stands in for a request whose bytes did not parse."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the caller's bad input
            return _Malformed(type(exc).__name__)

    return parse


def _request_id(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str:
    for key, value in metadata or ():
        if (
            key == _REQUEST_ID_HEADER
            and isinstance(value, str)
            and 0 < len(value) <= _MAX_REQUEST_ID
            and value.isprintable()
        ):
            return value
    return uuid.uuid4().hex


class _Call:
    """Book-keeping for one RPC: its id, method, start time and final code."""

    __slots__ = ("code", "method", "request_id", "start")

    def __init__(self, method: str, request_id: str) -> None:
        self.method = method
        self.request_id = request_id
        self.start = time.perf_counter()
        self.code = grpc.StatusCode.OK

    def log(self, context: Any) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        access_log.info(
            "%s %s",
            self.method,
            self.code.name,
            extra={
                "method": self.method,
                "code": self.code.name,
                "duration_ms": round((time.perf_counter() - self.start) * 1000, 3),
                "peer": context.peer(),
                "request_id": self.request_id,
            },
        )


class CortexInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler with request ids, error mapping and access logging."""

    def __init__(self, streams: StreamRegistry) -> None:
        self.streams = streams

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, metadata, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, metadata, handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, metadata, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, metadata, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(
        self, method: str, metadata: Any, behavior: Callable[..., Any]
    ) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: Any) -> Any:
            async with _Guard(self, method, metadata, context, request, stream=False):
                return await behavior(request, context)

        return handle

    def _stream(
        self, method: str, metadata: Any, behavior: Callable[..., Any]
    ) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):

            async def generate(request: Any, context: Any) -> AsyncIterator[Any]:
                async with _Guard(self, method, metadata, context, request, stream=True):
                    async for response in behavior(request, context):
                        yield response

            return generate

        # Handlers that stream with ``context.write`` (grpc's own health Watch).
        async def write(request: Any, context: Any) -> None:
            async with _Guard(self, method, metadata, context, request, stream=True):
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    await result

        return write

    async def abort_malformed(self, call: _Call, context: Any, request: _Malformed) -> None:
        call.code = grpc.StatusCode.INVALID_ARGUMENT
        await context.abort_with_status(
            status.invalid_request_status(f"request message could not be parsed ({request.error})")
        )

    async def fail(self, call: _Call, context: Any, exc: BaseException) -> None:
        """Translate ``exc`` into the call's status; returns only for cancellation."""
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            call.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            return
        if isinstance(exc, asyncio.CancelledError):
            call.code = grpc.StatusCode.CANCELLED
            return
        if isinstance(exc, errors.CortexError):
            rpc = status.to_rpc_status(exc)
            call.code = rpc.code
            if rpc.code is grpc.StatusCode.INTERNAL:
                error_log.error(
                    "unmapped domain error in %s",
                    call.method,
                    exc_info=exc,
                    extra={"request_id": call.request_id},
                )
                rpc = status.internal_status(call.request_id)
            await context.abort_with_status(rpc)
        if not isinstance(exc, Exception):
            return
        if isinstance(exc, NotImplementedError):
            # Generated base servicers raise this for RPCs not built yet.
            call.code = grpc.StatusCode.UNIMPLEMENTED
            await context.abort_with_status(status.unimplemented_status(call.method))
        call.code = grpc.StatusCode.INTERNAL
        error_log.error(
            "unexpected error in %s",
            call.method,
            exc_info=exc,
            extra={"request_id": call.request_id, "method": call.method},
        )
        await context.abort_with_status(status.internal_status(call.request_id))


class _Guard:
    """The per-call frame: request id, stream registration, error mapping, access log."""

    __slots__ = ("_context", "_interceptor", "_request", "_stream", "_task", "_token", "call")

    def __init__(
        self,
        interceptor: CortexInterceptor,
        method: str,
        metadata: Any,
        context: Any,
        request: Any,
        *,
        stream: bool,
    ) -> None:
        self._interceptor = interceptor
        self._context = context
        self._request = request
        self._stream = stream
        self._task: asyncio.Task[Any] | None = None
        self.call = _Call(method, _request_id(metadata))

    async def __aenter__(self) -> _Guard:
        self._token = request_id_var.set(self.call.request_id)
        if self._stream:
            self._task = asyncio.current_task()
            if self._task is not None:
                self._interceptor.streams.add(self._task)
        if isinstance(self._request, _Malformed):
            await self._interceptor.abort_malformed(self.call, self._context, self._request)
        if self._stream and self._interceptor.streams.draining:
            await self._interceptor.fail(self.call, self._context, _shutting_down())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            if exc is None:
                return False
            if (
                isinstance(exc, asyncio.CancelledError)
                and self._task is not None
                and _is_shutdown(exc)
                and self._interceptor.streams.draining
            ):
                # Our own drain interrupted this stream: end it with UNAVAILABLE instead.
                self._task.uncancel()
                await self._interceptor.fail(self.call, self._context, _shutting_down())
            await self._interceptor.fail(self.call, self._context, exc)
            return False
        finally:
            if self._task is not None:
                self._interceptor.streams.discard(self._task)
            request_id_var.reset(self._token)
            self.call.log(self._context)


def _shutting_down() -> errors.Unavailable:
    return errors.Unavailable("server is shutting down; reconnect", reason="SERVER_SHUTTING_DOWN")


def _is_shutdown(exc: asyncio.CancelledError) -> bool:
    return bool(exc.args) and exc.args[0] == SHUTDOWN_MESSAGE
