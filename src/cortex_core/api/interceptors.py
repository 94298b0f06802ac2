"""The server's interceptor: request ids, the access log and error mapping.

One interceptor wraps each method's handler once (wrapped handlers are cached
per method), so a call pays for a single extra frame. For each call it:

* assigns a request id (the caller's ``x-request-id`` when it is sane);
* turns request bytes that do not parse, and requests that fail the edge checks
  of :mod:`cortex_core.api.input_checks` (NUL characters, out-of-range
  durations and times), into ``INVALID_ARGUMENT`` before auth or any handler;
* maps :class:`~cortex_core.errors.CortexError` raised by a handler, unary or
  mid-stream, through :mod:`cortex_core.api.status`;
* turns ``NotImplementedError`` (generated base servicers) into
  ``UNIMPLEMENTED`` and any other exception into ``INTERNAL`` with a generic
  message, logging the traceback with the request id;
* admits the call through :class:`~cortex_core.api.streams.StreamRegistry`
  (Cortex's own concurrency limit and the drain's refusals, each a status with
  ``ErrorInfo`` and ``RetryInfo``, which grpc's own limits cannot send);
* ends open streams with ``UNAVAILABLE`` when the server drains;
* for the public sign-in methods, resolves the client's address (the peer, or
  ``x-forwarded-for`` when the peer is a trusted proxy; see
  :func:`~cortex_core.api.context.resolve_client`);
* after authentication, counts the call against the caller's limits
  (:class:`~cortex_core.api.limits.CallLimiter`: per-user and per-workspace
  rates, per-user open streams; RESOURCE_EXHAUSTED with RATE_LIMITED or
  TOO_MANY_STREAMS and RetryInfo), the stream's count released in ``finally``;
* records the call in the access log: method, code, duration, peer, request id,
  and in the metrics (calls by method and code, durations, open streams).

Server streams are served as coroutines that write each response with
``context.write``, never handed to grpc as async generators: grpc iterates a
generator with ``async for`` and, when the call is cancelled while it awaits a
write (a killed client, a full flow-control window, a server stop), leaves the
generator suspended. Its ``finally`` blocks then ran later, from the garbage
collector's finalizer in another task and another context (resetting a context
variable failed there with "Token was created in a different Context", and the
stream's cleanup came late or never). Here the wrapped generator is closed with
``aclosing`` inside the call's own task, whatever ends the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
import grpc.aio

from cortex_core import errors
from cortex_core.api import status
from cortex_core.api.access_log import AccessLog
from cortex_core.api.context import IPNetwork, caller_var, client_var, resolve_client
from cortex_core.api.input_checks import request_violations
from cortex_core.api.limits import STREAM_METHODS, CallLimiter
from cortex_core.api.streams import SHUTDOWN_MESSAGE, StreamRegistry, shutting_down
from cortex_core.ports import Metrics
from cortex_core.services.authentication import Authenticator

error_log = logging.getLogger("cortex.errors")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar(
    "cortex_request_id", default=""
)

_REQUEST_ID_HEADER = "x-request-id"
_MAX_REQUEST_ID = 128
_OK = grpc.StatusCode.OK

# Cortex methods callable without a token; every other ``/cortex.`` method needs one.
# Health and reflection (not ``/cortex.``) are always public.
PUBLIC_METHODS = frozenset(
    {
        "/cortex.auth.v1.AuthService/Register",
        "/cortex.auth.v1.AuthService/Login",
        "/cortex.auth.v1.AuthService/RefreshToken",
    }
)


_HEALTH = "/grpc.health.v1.Health/"
# Streams the drain does not interrupt at once: a reply finishes within the grace
# (and ends with its completion frame); an event subscription or a task watch is
# ended by its hub with its own resume point.
_FINISH_ON_DRAIN = frozenset(
    {
        "/cortex.context.v1.ConversationService/SendMessage",
        "/cortex.events.v1.EventService/SubscribeEvents",
        "/cortex.experts.v1.ExpertService/WatchTask",
    }
)


def needs_auth(method: str) -> bool:
    return method.startswith("/cortex.") and method not in PUBLIC_METHODS


MALFORMED_MESSAGE = "request message could not be parsed"
INVALID_FIELDS_MESSAGE = "request has invalid field values"


class _Malformed:
    """Stands in for a request refused at the edge: bytes that did not parse, or a
    message that failed :func:`request_violations`."""

    __slots__ = ("error",)

    def __init__(self, error: errors.InvalidArgument) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            message = deserializer(data)
        except Exception:  # noqa: BLE001 - any parse failure is the caller's bad input
            # No exception text: it would name protobuf's internal classes.
            return _Malformed(errors.InvalidArgument(MALFORMED_MESSAGE, reason="MALFORMED_REQUEST"))
        violations = request_violations(message)
        if violations:
            return _Malformed(errors.InvalidArgument(INVALID_FIELDS_MESSAGE, violations))
        return message

    return parse


def _bearer(value: str | bytes) -> str | None:
    if not isinstance(value, str):
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _call_headers(context: Any) -> tuple[str, str | None]:
    """The request id (the caller's sane ``x-request-id`` or a random one) and the
    bearer token, read in one pass over the metadata."""
    request_id = ""
    token = None
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            token = _bearer(value)
        elif (
            key == _REQUEST_ID_HEADER
            and isinstance(value, str)
            and 0 < len(value) <= _MAX_REQUEST_ID
            and value.isprintable()
        ):
            request_id = value
    return request_id or os.urandom(16).hex(), token


def _interrupted_by_drain(
    exc: BaseException, task: asyncio.Task[Any] | None, streams: StreamRegistry
) -> BaseException:
    """``exc``, or SERVER_SHUTTING_DOWN when it is the drain's own interruption of
    ``task`` (the call then ends with UNAVAILABLE and RetryInfo, not CANCELLED)."""
    if (
        isinstance(exc, asyncio.CancelledError)
        and task is not None
        and exc.args
        and exc.args[0] == SHUTDOWN_MESSAGE
        and streams.draining
    ):
        task.uncancel()
        return shutting_down()
    return exc


class CortexInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every handler with request ids, error mapping and access logging."""

    def __init__(
        self,
        streams: StreamRegistry,
        access_log: AccessLog | None,
        authenticator: Authenticator | None = None,
        trusted_proxies: Sequence[IPNetwork] = (),
        metrics: Metrics | None = None,
        limiter: CallLimiter | None = None,
    ) -> None:
        self.streams = streams
        self.limiter = limiter
        self._access_log = access_log
        self.metrics = metrics
        self.authenticator = authenticator
        self._trusted_proxies = tuple(trusted_proxies)
        # The registered handlers never change while serving, so each method's
        # handler is wrapped once instead of on every call.
        self._wrapped: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method: str = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped

    def _wrap(self, method: str, handler: Any) -> Any:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=_tolerant(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._unary(method, handler.stream_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._stream(method, handler.stream_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _unary(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        authenticator = self.authenticator if needs_auth(method) else None
        streams = self.streams
        exempt = method.startswith(_HEALTH)
        resolves_client = method in PUBLIC_METHODS

        async def handle(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            request_id, bearer = _call_headers(context)
            token = request_id_var.set(request_id)
            code = _OK
            admitted = False
            task = asyncio.current_task()
            try:
                await streams.admit(exempt=exempt)
                admitted = True
                if task is not None:
                    streams.add(task, interrupt_on_drain=False)
                if isinstance(request, _Malformed):
                    await self.abort_malformed(context, request)
                if resolves_client:
                    client_var.set(resolve_client(context, self._trusted_proxies))
                if authenticator is not None:
                    caller = await authenticator.authenticate(bearer)
                    caller_var.set(caller)
                    if self.limiter is not None:
                        await self.limiter.admit(caller.user_id, request)
                return await behavior(request, context)
            except BaseException as exc:
                code, rpc = self.outcome(
                    method, request_id, context, _interrupted_by_drain(exc, task, streams)
                )
                if rpc is not None:
                    await context.abort_with_status(rpc)
                raise
            finally:
                if admitted:
                    if task is not None:
                        streams.discard(task)
                    streams.release()
                request_id_var.reset(token)
                self.log(method, code, start, context, request_id)

        return handle

    def _stream(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        generator = inspect.isasyncgenfunction(behavior)
        interrupt = method not in _FINISH_ON_DRAIN

        async def serve(request: Any, context: Any) -> None:
            async with _StreamGuard(self, method, context, request, interrupt):
                if generator:
                    # Closed here, in the call's own task (see the module docstring).
                    async with contextlib.aclosing(behavior(request, context)) as responses:
                        async for response in responses:
                            await context.write(response)
                    return
                # Handlers that stream with ``context.write`` (grpc's own health Watch).
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    await result

        return serve

    def log(
        self, method: str, code: grpc.StatusCode, start: float, context: Any, request_id: str
    ) -> None:
        if self._access_log is None and self.metrics is None:
            return
        seconds = time.perf_counter() - start
        if self.metrics is not None:
            self.metrics.rpc_finished(method, code.name, seconds)
        if self._access_log is not None:
            duration_ms = round(seconds * 1000, 3)
            self._access_log.record(method, code.name, duration_ms, context.peer(), request_id)

    async def abort_malformed(self, context: Any, request: _Malformed) -> None:
        await context.abort_with_status(status.to_rpc_status(request.error))

    def outcome(
        self, method: str, request_id: str, context: Any, exc: BaseException
    ) -> tuple[grpc.StatusCode, grpc.Status | None]:
        """The call's final code for ``exc``, and the status to send if one is still due."""
        if isinstance(exc, grpc.aio.AbortError):
            code = context.code()
            return (code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN), None
        if not isinstance(exc, Exception):  # cancelled by the client or by shutdown
            return grpc.StatusCode.CANCELLED, None
        if isinstance(exc, errors.CortexError):
            rpc = status.to_rpc_status(exc)
            if rpc.code is not grpc.StatusCode.INTERNAL:
                return rpc.code, rpc
        elif isinstance(exc, NotImplementedError):
            # Generated base servicers raise this for RPCs not built yet.
            return grpc.StatusCode.UNIMPLEMENTED, status.unimplemented_status(method)
        error_log.error(
            "unexpected error in %s",
            method,
            exc_info=exc,
            extra={"request_id": request_id, "method": method},
        )
        return grpc.StatusCode.INTERNAL, status.internal_status(request_id)


class _StreamGuard:
    """A streaming call's frame: admission, registration for drain, error mapping,
    access log. Entered and exited in the call's own task."""

    __slots__ = (
        "_admitted",
        "_bearer",
        "_code",
        "_context",
        "_interceptor",
        "_interrupt",
        "_method",
        "_release_stream",
        "_request",
        "_request_id",
        "_start",
        "_task",
        "_token",
    )

    def __init__(
        self,
        interceptor: CortexInterceptor,
        method: str,
        context: Any,
        request: Any,
        interrupt: bool,
    ) -> None:
        self._interceptor = interceptor
        self._method = method
        self._context = context
        self._request = request
        self._interrupt = interrupt
        self._start = time.perf_counter()
        self._request_id, self._bearer = _call_headers(context)
        self._code = _OK
        self._admitted = False
        self._task: asyncio.Task[Any] | None = None
        self._token: contextvars.Token[str] | None = None
        self._release_stream: Callable[[], None] | None = None

    async def __aenter__(self) -> None:
        self._token = request_id_var.set(self._request_id)
        if self._interceptor.metrics is not None:
            self._interceptor.metrics.stream_opened(self._method)
        self._task = asyncio.current_task()
        streams = self._interceptor.streams
        if self._task is not None:
            streams.add(self._task, interrupt_on_drain=self._interrupt)
        try:
            await streams.admit(
                exempt=self._method.startswith(_HEALTH), interrupt_on_drain=self._interrupt
            )
            self._admitted = True
            if isinstance(self._request, _Malformed):
                await self._interceptor.abort_malformed(self._context, self._request)
            authenticator = self._interceptor.authenticator
            if authenticator is not None and needs_auth(self._method):
                caller = await authenticator.authenticate(self._bearer)
                caller_var.set(caller)
                limiter = self._interceptor.limiter
                if limiter is not None:
                    await limiter.admit(caller.user_id, self._request)
                    if self._method in STREAM_METHODS:
                        self._release_stream = limiter.open_stream(caller.user_id)
        except BaseException as exc:
            await self.__aexit__(type(exc), exc, exc.__traceback__)
            raise

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        interceptor = self._interceptor
        try:
            if exc is None:
                return False
            self._code, rpc = interceptor.outcome(
                self._method,
                self._request_id,
                self._context,
                _interrupted_by_drain(exc, self._task, interceptor.streams),
            )
            if rpc is not None:
                await self._context.abort_with_status(rpc)
            return False
        finally:
            if self._release_stream is not None:
                self._release_stream()
                self._release_stream = None
            streams = interceptor.streams
            if self._task is not None:
                streams.discard(self._task)
                self._task = None
            if self._admitted:
                self._admitted = False
                streams.release()
            if self._token is not None:
                request_id_var.reset(self._token)
                self._token = None
                if interceptor.metrics is not None:
                    interceptor.metrics.stream_closed(self._method)
                interceptor.log(
                    self._method, self._code, self._start, self._context, self._request_id
                )
