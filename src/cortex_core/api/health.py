"""``grpc.health.v1`` for operators and load balancers.

The overall status (service ``""``) and one status per Cortex service start as
NOT_SERVING, become SERVING once migrations have run, follow the database's
liveness while running, and go NOT_SERVING for good when the server drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

from cortex_core import errors
from cortex_core.ports import Database

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    """Owns the health servicer and the statuses it reports."""

    def __init__(self, services: Sequence[str]) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._services = ("", *services)
        self._serving = False

    async def set_all(self, serving: bool) -> None:
        self._serving = serving
        for service in self._services:
            await self.servicer.set(service, SERVING if serving else NOT_SERVING)

    async def drain(self) -> None:
        """NOT_SERVING for every service, and ignore any later change."""
        await self.servicer.enter_graceful_shutdown()

    async def watch_providers(
        self, states: Callable[[], Mapping[str, str]], interval: float
    ) -> None:
        """Publish each LLM provider's circuit as service ``cortex.llm.<name>``:
        SERVING while closed or half-open, NOT_SERVING while open. Until cancelled."""
        while True:
            for name, state in states().items():
                await self.servicer.set(
                    f"cortex.llm.{name}", NOT_SERVING if state == "open" else SERVING
                )
            await asyncio.sleep(interval)

    async def watch_database(self, database: Database, interval: float) -> None:
        """Follow the database's liveness until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await database.ping()
                healthy = True
            except errors.Unavailable:
                healthy = False
            if healthy != self._serving:
                log.warning("database %s", "is back" if healthy else "is unreachable")
                await self.set_all(healthy)
