"""The grpc.aio server: options, lifecycle and graceful drain.

Start-up: migrations run first; only then do health statuses turn SERVING.
On SIGTERM or SIGINT the server drains (see :meth:`RunningServer.drain`):
health goes NOT_SERVING, event streams end at once with their resume point,
calls in progress (replies included) get ``CORTEX_SHUTDOWN_GRACE`` seconds to
finish, later calls are refused with a retryable status, and the process exits 0
as soon as the work is done, not after the whole grace.

Channel options, chosen on purpose:

* keepalive: a ping every 20 s of silence with a 10 s ack timeout, so a dead
  client is reaped within 30 s; clients may ping every 10 s, even with no call
  open (streams idle between heartbeats).
* admission is Cortex's own (``CORTEX_MAX_CONCURRENT_RPCS`` and
  ``CORTEX_MAX_PENDING_REQUESTS``, enforced by the interceptor through
  :class:`~cortex_core.api.streams.StreamRegistry`), because grpc refuses with a
  bare status that cannot carry ErrorInfo or RetryInfo. grpc's own limits are
  set out of the way: no ``maximum_concurrent_rpcs``, and grpc core's queue of
  calls not yet picked up by the event loop (``grpc.server.max_pending_requests``,
  1000 by default, with random early refusals up to its hard limit) raised to
  ``CORE_PENDING_BACKSTOP``, a backstop against floods that a reconnect burst
  does not reach.
* message size: ``CORTEX_MAX_MESSAGE_BYTES`` (4 MiB) for requests and replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cortex_core import errors
from cortex_core.api.interceptors import CortexInterceptor
from cortex_core.api.registry import register_services
from cortex_core.bootstrap import App, database_unreachable

log = logging.getLogger(__name__)

KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000
MIN_CLIENT_PING_INTERVAL_MS = 10_000
HEALTH_FLUSH_SECONDS = 0.05
CORE_PENDING_BACKSTOP = 50_000
# Part of the grace kept for streams interrupted at its end (a reply stores its
# partial text) and for the server's own stop.
INTERRUPT_MARGIN_SECONDS = 1.0
# The drain refuses new calls once nothing is in progress and nothing arrived for this
# long: by then grpc's queue holds no call sent before SIGTERM.
SETTLE_SECONDS = 0.25
# Part of the grace kept for handing running tasks back (one write each).
HAND_BACK_SECONDS = 0.5


def server_options(app: App) -> list[tuple[str, Any]]:
    size = app.settings.max_message_bytes
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # gRPC core closes a transport whose ping is unanswered only after this
        # (default 60 s), whatever keepalive_timeout_ms says.
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.server.max_pending_requests", CORE_PENDING_BACKSTOP),
        ("grpc.server.max_pending_requests_hard_limit", CORE_PENDING_BACKSTOP),
        ("grpc.max_receive_message_length", size),
        ("grpc.max_send_message_length", size),
        ("grpc.so_reuseport", 0),
    ]


def build_server(app: App) -> tuple[grpc.aio.Server, list[str]]:
    """Create the server with interceptors, every service, health and reflection."""
    interceptors: list[Any] = [
        CortexInterceptor(
            app.streams,
            app.access_log,
            app.authenticator,
            trusted_proxies=app.settings.trusted_proxies,
            metrics=app.metrics,
            limiter=app.limiter,
        )
    ]
    if app.tracer_provider is not None:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

        # Inside Cortex's interceptor: it wraps servicers' async generators, and
        # Cortex's interceptor serves streams as coroutines (see api.interceptors).
        # Health is left out: its Watch writes with context.write, which the
        # instrumentation cannot wrap, and probes would only add noise.
        # Server streams are left out too: Cortex serves them as coroutines that
        # write with context.write (api.interceptors), which the instrumentation's
        # stream wrapper cannot iterate (it made every stream INTERNAL).
        streams = [filters.full_method_name(name) for name in _server_streams(app.servicers)]
        untraced = filters.negate(filters.any_of(filters.health_check(), *streams))
        # The server span continues the caller's ``traceparent`` (W3C propagator).
        interceptors.append(
            aio_server_interceptor(  # type: ignore[no-untyped-call]
                tracer_provider=app.tracer_provider, filter_=untraced
            )
        )
        interceptors.append(_StreamSpans(app.tracer_provider.get_tracer("cortex.grpc")))
    server = grpc.aio.server(interceptors=interceptors, options=server_options(app))
    names = register_services(server, app.servicers)
    health_pb2_grpc.add_HealthServicer_to_server(app.health.servicer, server)
    reflection.enable_server_reflection(
        (*names, "grpc.health.v1.Health", reflection.SERVICE_NAME), server
    )
    return server, names


class RunningServer:
    """A started server: its bound address and how to drain it."""

    def __init__(
        self, app: App, server: grpc.aio.Server, address: str, tasks: Sequence[asyncio.Task[None]]
    ) -> None:
        self.app = app
        self.server = server
        self.address = address
        self._tasks = tasks

    async def drain(self) -> None:
        """Stop serving without cutting anyone off; return as soon as the work is done.

        1. Health goes NOT_SERVING (checks keep answering). Event streams end at
           once with UNAVAILABLE, reason SERVER_SHUTTING_DOWN, a RetryInfo and
           their resume token; other long-lived streams (health Watch) with the
           same status.
        2. Unary calls and replies in progress finish, and calls that still arrive
           are served: under load a call waits in grpc's queue after it was sent,
           so they may be from before SIGTERM (see ``api.streams``).
        3. Once nothing is in progress and nothing new came for
           ``SETTLE_SECONDS``, or ``INTERRUPT_MARGIN_SECONDS`` before the grace
           ends, new calls are refused with SERVER_SHUTTING_DOWN and RetryInfo, and
           what still runs is interrupted with that status (a reply stores its
           partial text with FINISH_REASON_CANCELLED; retried with the same
           idempotency key it returns that reply and its completion).
        4. The grpc server stops (nothing is left to wait for); running tasks
           have finished or are handed back (``App.drainers``); background work
           stops, connections close.
        """
        loop = asyncio.get_running_loop()
        grace = self.app.settings.shutdown_grace
        deadline = loop.time() + grace
        margin = min(INTERRUPT_MARGIN_SECONDS, grace / 2)
        streams = self.app.streams
        log.info("draining", extra={"grace_seconds": grace, "calls": streams.calls})
        # Background work that holds claims (running tasks) finishes or hands them
        # back within the grace, beside the calls.
        drains = [
            asyncio.ensure_future(drain(max(grace - margin - HAND_BACK_SECONDS, 0.0)))
            for drain in self.app.drainers
        ]
        streams.begin_drain()
        await self.app.health.drain()
        await asyncio.sleep(HEALTH_FLUSH_SECONDS)  # let health watchers see NOT_SERVING
        told = streams.tell_streams()
        settled = await _within(streams.settled(SETTLE_SECONDS), deadline - margin - loop.time())
        streams.stop_admitting()
        interrupted = 0
        if not settled:
            interrupted = streams.interrupt()
            await _within(streams.idle(), deadline - loop.time())
        left = streams.calls
        await self.server.stop(max(deadline - loop.time(), 0.0))
        await _within(_all(drains), deadline - loop.time())
        for task in self._tasks:  # after the calls, so their access records are flushed
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.app.database.dispose()
        for close in self.app.closers:
            await close()
        log.info(
            "stopped",
            extra={
                "streams_told": told,
                "streams_interrupted": interrupted,
                "calls_cut": left,
                "drain_seconds": round(grace - (deadline - loop.time()), 3),
            },
        )


async def _all(futures: Sequence[asyncio.Future[None]]) -> None:
    """Wait for every future; their failures are logged, never raised."""
    for outcome in await asyncio.gather(*futures, return_exceptions=True):
        if isinstance(outcome, BaseException):
            log.error("draining background work failed", exc_info=outcome)


async def _within(awaitable: Awaitable[None], seconds: float) -> bool:
    """Await ``awaitable`` for at most ``seconds``; whether it finished."""
    try:
        async with asyncio.timeout(max(seconds, 0.0)):
            await awaitable
    except TimeoutError:
        return False
    return True


async def start(app: App) -> RunningServer:
    """Migrate, bind, start and report SERVING; raise if the address is taken, or
    :class:`~cortex_core.settings.StartupError` if the database does not answer."""
    try:
        await app.database.migrate()
    except errors.Unavailable as error:
        raise database_unreachable(app.settings, error) from None
    for starter in app.starters:
        await starter()
    server, _ = build_server(app)
    address = app.settings.grpc_address
    try:
        credentials = server_credentials(app)
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        raise OSError(
            f"cannot listen on {address}: the address is in use or not available"
        ) from None
    host = address.rpartition(":")[0]
    bound = f"{host}:{port}"
    await server.start()
    await app.health.set_all(True)
    tasks = await app.supervisor.start(app.background)
    log.info("serving", extra={"address": bound})
    return RunningServer(app, server, bound, tasks)


def server_credentials(app: App) -> grpc.ServerCredentials | None:
    """TLS credentials from ``CORTEX_TLS_*`` (checked by the settings), or None for
    plaintext; with a client CA, a client without a certificate it signed is refused
    during the handshake."""
    cert, key = app.settings.tls_cert_file, app.settings.tls_key_file
    if cert is None or key is None:
        return None
    ca = app.settings.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [(key.data, cert.data)],
        root_certificates=ca.data if ca is not None else None,
        require_client_auth=ca is not None,
    )


def transport(app: App) -> str:
    """How the port speaks, for the start-up line."""
    if app.settings.tls_cert_file is None:
        return "plaintext"
    return "mTLS" if app.settings.tls_client_ca_file is not None else "TLS"


GC_THRESHOLDS = (10_000, 50, 100)


def tune_garbage_collector() -> None:
    """Keep full collections out of the request path of a long-lived server.

    Everything built at start (modules, SDK clients, protobuf descriptors: well
    over 100 MiB) is moved out of the collector's reach with ``gc.freeze()``,
    and young collections run less often. Without this, 3-4 full collections of
    160-230 ms each fell into every 1,000-subscriber event fan-out measured by
    ``bench.events`` and set its p99. Only the ``serve`` process does this; tests
    that start servers in-process keep the defaults.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(app: App, *, announce: bool = True) -> None:
    """Run until SIGTERM/SIGINT, then drain; the whole life of ``cortex-core serve``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = await start(app)
    tune_garbage_collector()
    if announce:
        print(f"Cortex Core serving on {running.address} (gRPC, {transport(app)})", flush=True)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        await running.drain()


def _server_streams(servicers: Mapping[str, object]) -> list[str]:
    """``/package.Service/Method`` of every server-streaming RPC of ``servicers``."""
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    return [
        f"/{service}/{method.name}"
        for service in servicers
        for method in pool.FindServiceByName(service).methods
        if method.server_streaming
    ]


class _StreamSpans(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """A server span (continuing the caller's ``traceparent``) around each
    server-streaming call, which the instrumentation's interceptor cannot wrap."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None or handler.unary_stream is None:
            return handler
        from opentelemetry import propagate, trace

        behavior: Any = handler.unary_stream
        method = details.method
        tracer = self._tracer

        def carrier(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
            return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}

        if inspect.isasyncgenfunction(behavior):

            async def streamed(request: Any, context: Any) -> AsyncIterator[Any]:
                parent = propagate.extract(carrier(context))
                with tracer.start_as_current_span(
                    method, context=parent, kind=trace.SpanKind.SERVER
                ):
                    async for response in behavior(request, context):
                        yield response

            wrapped: Any = streamed
        else:

            async def written(request: Any, context: Any) -> Any:
                parent = propagate.extract(carrier(context))
                with tracer.start_as_current_span(
                    method, context=parent, kind=trace.SpanKind.SERVER
                ):
                    return await behavior(request, context)

            wrapped = written
        return grpc.unary_stream_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
