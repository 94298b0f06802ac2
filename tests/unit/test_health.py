"""Health follows the database: NOT_SERVING while it is unreachable, SERVING again after."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from cortex_core import errors
from cortex_core.api.health import HealthReporter
from cortex_core.services.supervisor import Loop, Supervisor, every


class FlakyDatabase:
    def __init__(self) -> None:
        self.up = True

    async def ping(self) -> None:
        if not self.up:
            raise errors.Unavailable("down")


async def _status(reporter: HealthReporter, service: str) -> int:
    request = health_pb2.HealthCheckRequest(service=service)

    class Context:
        async def abort(self, code: object, details: str) -> None:
            raise AssertionError(details)

    response = await reporter.servicer.Check(request, Context())
    return int(response.status)


async def _eventually(reporter: HealthReporter, expected: int) -> None:
    async with asyncio.timeout(5):
        while await _status(reporter, "") != expected:
            await asyncio.sleep(0.01)


async def test_health_follows_the_database() -> None:
    reporter = HealthReporter(["cortex.auth.v1.AuthService"])
    await reporter.set_all(True)
    database = FlakyDatabase()
    (watcher,) = await Supervisor().start(
        [Loop("database-watch", every(0.01, lambda: reporter.check_database(database)))]  # type: ignore[arg-type]
    )
    try:
        database.up = False
        await _eventually(reporter, health_pb2.HealthCheckResponse.NOT_SERVING)
        assert (
            await _status(reporter, "cortex.auth.v1.AuthService")
            == health_pb2.HealthCheckResponse.NOT_SERVING
        )
        database.up = True
        await _eventually(reporter, health_pb2.HealthCheckResponse.SERVING)
    finally:
        watcher.cancel()


async def test_after_drain_nothing_turns_serving_again() -> None:
    reporter = HealthReporter([])
    await reporter.set_all(True)
    await reporter.drain()
    await reporter.set_all(True)
    assert await _status(reporter, "") == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_an_mcp_server_follows_its_session_not_the_database() -> None:
    reporter = HealthReporter(["cortex.auth.v1.AuthService"], tool_servers=["search"])
    await reporter.set_all(True)
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert await _status(reporter, "cortex.tools.search") == not_serving  # not connected yet
    await reporter.tool_server_changed("search", True)
    assert await _status(reporter, "cortex.tools.search") == serving
    await reporter.set_all(False)  # the database went away: the session did not
    assert await _status(reporter, "cortex.tools.search") == serving
    await reporter.tool_server_changed("search", False)
    await reporter.set_all(True)
    assert await _status(reporter, "cortex.tools.search") == not_serving
