"""The task runner survives a PostgreSQL outage under a running ``cortex-core serve``.

The database is a private server (``initdb``/``pg_ctl``), stopped while a task
runs and started again: the runner shows in health that it backs off, recovers
by itself, the task that was running finishes (its attempt retried if it was
cut), and a task created after the outage runs too. Calls during the outage get
a retryable UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2
from support.events import JWT_SECRET
from support.postgres import private_postgres
from support.rpc import details
from support.servers import cortex_server
from support.task_client import (
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    TasksClient,
    state_name,
    until_state,
    words,
)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RUNNER = "cortex.background.tasks"


async def _until_health(client: TasksClient, service: str, status: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while await client.health_status(service) != status:
        assert time.monotonic() < deadline, f"{service} never became {status}"
        await asyncio.sleep(0.2)


async def test_the_runner_recovers_by_itself_after_postgresql_is_stopped_and_started(
    tmp_path: Path,
) -> None:
    with private_postgres() as postgres:
        env = {
            "CORTEX_DATABASE_URL": postgres.url,
            "CORTEX_JWT_SECRET": JWT_SECRET,
            "CORTEX_LOCAL_LLM_DELAY": "0.1",
        }
        with cortex_server(tmp_path, env) as server:
            client = TasksClient(server.address)
            alice = await client.register()
            workspace = str((await client.first_workspace(alice)).name)
            cut = await client.create(alice, workspace, words(60))
            await until_state(client, alice, cut.name, {RUNNING})
            assert await client.health_status(RUNNER) == SERVING

            postgres.stop()
            await _until_health(client, RUNNER, NOT_SERVING)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.get(alice, cut.name)
            assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "RetryInfo" in details(refused.value)
            await asyncio.sleep(3)  # an outage longer than a lease heartbeat

            postgres.start()
            await _until_health(client, RUNNER, SERVING)
            await _until_health(client, "cortex.background", SERVING)
            finished = await until_state(client, alice, cut.name, TERMINAL, within=90)
            after = await client.create(alice, workspace, "after the outage")
            done = await until_state(client, alice, after.name, TERMINAL, within=60)
            await client.close()
            logs = server.logs()

    assert finished.state == SUCCEEDED, (state_name(finished.state), finished.error)
    assert done.state == SUCCEEDED, (state_name(done.state), done.error)
    assert "Traceback" not in logs
