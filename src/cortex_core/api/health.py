"""``grpc.health.v1`` for operators and load balancers.

* ``""`` and one status per implemented Cortex service start as NOT_SERVING,
  become SERVING once migrations have run, follow the database's liveness while
  running (a probe on a connection of its own, so a busy pool is not an
  outage), and go NOT_SERVING for good when the server drains.
* A service in the contract that is not built yet (its RPCs answer
  UNIMPLEMENTED) is NOT_SERVING, always.
* ``cortex.llm.<provider>``: SERVING while the provider's circuit is closed or
  half-open, NOT_SERVING while open.
* ``cortex.tools.<server>`` for each configured MCP server: SERVING while its
  session is up (connected, initialized, tools listed), NOT_SERVING otherwise; it
  follows the session only, not the database.
* ``cortex.background.<loop>`` for each supervised loop (see
  ``services/supervisor.py``): SERVING while running, NOT_SERVING while it backs
  off after a failure; ``cortex.background`` is SERVING when every loop is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from grpc_health.v1 import health, health_pb2

from cortex_core import errors
from cortex_core.ports import Database
from cortex_core.services.supervisor import LoopState, LoopStatus

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
BACKGROUND = "cortex.background"
TOOLS = "cortex.tools"


class HealthReporter:
    """Owns the health servicer and the statuses it reports."""

    def __init__(
        self,
        services: Sequence[str],
        unimplemented: Sequence[str] = (),
        tool_servers: Sequence[str] = (),
    ) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._services = ("", *services)
        self._unimplemented = tuple(unimplemented)
        self._serving = False
        self._loops: dict[str, LoopStatus] = {}
        self._tool_servers = dict.fromkeys(tool_servers, False)

    async def set_all(self, serving: bool) -> None:
        self._serving = serving
        for service in self._services:
            await self.servicer.set(service, SERVING if serving else NOT_SERVING)
        for service in self._unimplemented:
            await self.servicer.set(service, NOT_SERVING)
        for server, up in self._tool_servers.items():
            await self.servicer.set(f"{TOOLS}.{server}", SERVING if up else NOT_SERVING)

    async def tool_server_changed(self, server: str, up: bool) -> None:
        """An MCP server's session came up or went down: ``cortex.tools.<server>``."""
        self._tool_servers[server] = up
        await self.servicer.set(f"{TOOLS}.{server}", SERVING if up else NOT_SERVING)

    async def drain(self) -> None:
        """NOT_SERVING for every service, and ignore any later change."""
        await self.servicer.enter_graceful_shutdown()

    async def publish_providers(self, states: Callable[[], Mapping[str, str]]) -> None:
        """Publish each LLM provider's circuit as service ``cortex.llm.<name>``."""
        for name, state in states().items():
            await self.servicer.set(
                f"cortex.llm.{name}", NOT_SERVING if state == "open" else SERVING
            )

    async def check_database(self, database: Database) -> None:
        """Ping the database once; turn every status to follow the answer."""
        try:
            await database.ping()
            healthy = True
        except errors.Unavailable:
            healthy = False
        if healthy != self._serving:
            log.warning("database %s", "is back" if healthy else "is unreachable")
            await self.set_all(healthy)

    async def background_changed(self, state: LoopState) -> None:
        """A supervised loop changed state: publish it and the aggregate."""
        self._loops[state.name] = state.status
        running = state.status is LoopStatus.RUNNING
        await self.servicer.set(f"{BACKGROUND}.{state.name}", SERVING if running else NOT_SERVING)
        every_running = all(s is LoopStatus.RUNNING for s in self._loops.values())
        await self.servicer.set(BACKGROUND, SERVING if every_running else NOT_SERVING)
