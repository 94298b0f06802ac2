"""The grpc.aio server: options, lifecycle and graceful drain.

Start-up: migrations run first; only then do health statuses turn SERVING.
On SIGTERM or SIGINT the server drains in order: health goes NOT_SERVING, open
streams end with UNAVAILABLE so clients reconnect elsewhere, in-flight unary
calls get ``shutdown_grace`` seconds to finish, then the process exits 0.

Channel options, chosen on purpose:

* keepalive: a ping every 20 s of silence with a 10 s ack timeout, so a dead
  client is reaped within 30 s; clients may ping every 10 s, even with no call
  open (streams idle between heartbeats).
* ``grpc.server.max_pending_requests``: how many calls may wait for a free
  slot during a reconnect burst (e.g. every client of a restarted replica at
  once) before new ones are refused with RESOURCE_EXHAUSTED.
* message size: ``CORTEX_MAX_MESSAGE_BYTES`` (4 MiB) for requests and replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Sequence
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
        ("grpc.server.max_pending_requests", app.settings.max_pending_requests),
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
        )
    ]
    if app.settings.tracing:
        from opentelemetry.instrumentation.grpc import aio_server_interceptor

        interceptors.insert(0, aio_server_interceptor())  # type: ignore[no-untyped-call]
    server = grpc.aio.server(
        interceptors=interceptors,
        options=server_options(app),
        maximum_concurrent_rpcs=app.settings.max_concurrent_rpcs or None,
    )
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
        """Health NOT_SERVING, streams told to go away, in-flight calls finish."""
        grace = self.app.settings.shutdown_grace
        log.info("draining", extra={"grace_seconds": grace})
        await self.app.health.drain()
        await asyncio.sleep(HEALTH_FLUSH_SECONDS)  # let health watchers see NOT_SERVING
        closed = self.app.streams.close_all()
        await self.server.stop(grace)
        for task in self._tasks:  # after the calls, so their access records are flushed
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.app.database.dispose()
        for close in self.app.closers:
            await close()
        log.info("stopped", extra={"streams_closed": closed})


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
        port = server.add_insecure_port(address)
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
        print(f"Cortex Core serving on {running.address} (gRPC, plaintext)", flush=True)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError):
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        await running.drain()
