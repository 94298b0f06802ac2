"""Per-user and per-workspace request rates and per-user stream caps, over a real
server: in process, and on Redis (a database of its own and a per-test key prefix,
so parallel runs on one machine never share a counter)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from support.clients import Account, Client, workspace_pb
from support.databases import require_env
from support.events import EventsClient, opened
from support.inprocess import running_app
from support.rpc import details

from cortex_core.api.limits import rate

LIMITS_REDIS_DB = 12


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    extra: dict[str, Any] = {"register_address_attempts": 1_000_000}
    if request.param == "redis":
        shared = urlsplit(require_env("CORTEX_TEST_REDIS_URL"))
        extra["redis_url"] = urlunsplit(shared._replace(path=f"/{LIMITS_REDIS_DB}"))
        extra["rate_prefix"] = f"test-limits-{uuid.uuid4().hex}"
    return extra


async def list_workspaces(client: Client, account: Account) -> Any:
    return await client.workspaces.ListWorkspaces(
        workspace_pb.ListWorkspacesRequest(), metadata=account.metadata(), timeout=10
    )


async def get_workspace(client: Client, account: Account, name: str) -> Any:
    return await client.workspaces.GetWorkspace(
        workspace_pb.GetWorkspaceRequest(name=name), metadata=account.metadata(), timeout=10
    )


def assert_refused(error: grpc.aio.AioRpcError, reason: str) -> float:
    """The refusal's code and reason; its RetryInfo delay in seconds."""
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
    found = details(error)
    assert found["ErrorInfo"].reason == reason
    assert found["ErrorInfo"].domain == "cortex"
    delay = found["RetryInfo"].retry_delay
    return float(delay.seconds + delay.nanos / 1e9)


async def test_a_burst_beyond_the_user_rate_is_refused_and_other_users_are_not(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(tmp_path, rate_user=rate("10/minute"), **backend) as server:
        client = Client(server.address)
        try:
            greedy = await client.register()
            other = await client.register()
            outcomes = await asyncio.gather(
                *(list_workspaces(client, greedy) for _ in range(25)), return_exceptions=True
            )
            refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
            assert len(outcomes) - len(refused) == 10
            assert len(refused) == 15
            for error in refused:
                assert 0 < assert_refused(error, "RATE_LIMITED") <= 60
            # Another user keeps working, while the first stays refused.
            assert (await list_workspaces(client, other)).workspaces
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await list_workspaces(client, greedy)
            assert_refused(caught.value, "RATE_LIMITED")
        finally:
            await client.close()


async def test_calls_naming_a_workspace_over_its_rate_are_refused_and_other_workspaces_go_on(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(tmp_path, rate_workspace=rate("6/minute"), **backend) as server:
        client = Client(server.address)
        try:
            owner = await client.register()
            other = await client.register()
            workspace = (await client.first_workspace(owner)).name
            theirs = (await client.first_workspace(other)).name
            for _ in range(6):
                await get_workspace(client, owner, workspace)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await get_workspace(client, owner, workspace)
            assert_refused(caught.value, "RATE_LIMITED")
            # The same user on another workspace, and calls naming no workspace, go on.
            await list_workspaces(client, owner)
            assert (await get_workspace(client, other, theirs)).workspace.name == theirs
        finally:
            await client.close()


async def test_streams_beyond_the_per_user_cap_are_refused_until_one_closes(
    tmp_path: Path, backend: dict[str, Any]
) -> None:
    async with running_app(
        tmp_path, max_streams_per_user=2, events_heartbeat=0.2, **backend
    ) as server:
        client = EventsClient(server.address)
        try:
            user = await client.register()
            other = await client.register()
            first = client.subscribe(user)
            second = client.subscribe(user)
            await opened(first)
            await opened(second)
            third = client.subscribe(user)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await third.read()
            assert assert_refused(caught.value, "TOO_MANY_STREAMS") > 0
            # Another user is not affected.
            theirs = client.subscribe(other)
            await opened(theirs)
            # Closing one frees its slot (released in the call's finally).
            first.cancel()
            again = None
            for _ in range(50):
                again = client.subscribe(user)
                try:
                    await opened(again, within=2)
                    break
                except grpc.aio.AioRpcError as error:
                    assert_refused(error, "TOO_MANY_STREAMS")
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("a closed stream's slot was never released")
            assert server.app.limiter is not None
            assert server.app.limiter.open_streams(user.user.removeprefix("users/")) == 2
            for stream in (second, theirs, again):
                stream.cancel()
        finally:
            await client.close()


async def test_a_redis_outage_lets_calls_through(tmp_path: Path) -> None:
    """The limits fail open (logged): a Redis that stops answering refuses nobody."""
    from support.events import own_redis

    async with own_redis(tmp_path / "redis") as redis:
        async with running_app(
            tmp_path,
            redis_url=redis.url,
            redis_timeout=0.5,
            rate_user=rate("1000/minute"),
            register_address_attempts=1_000_000,
        ) as server:
            client = Client(server.address)
            try:
                user = await client.register()
                await redis.kill()
                assert (await list_workspaces(client, user)).workspaces
            finally:
                await client.close()


async def test_the_in_process_limits_sweeper_runs_under_the_supervisor_and_shows_in_health(
    tmp_path: Path,
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with running_app(tmp_path) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="cortex.background.limits-sweeper"),
                timeout=10,
            )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
