"""Tasks through the runner: throughput, create-to-running and cancel latency, and a
bare queue on the same database as the same run's baseline.

A Cortex server runs in this process (``bootstrap``/``start``, SQLite by default,
PostgreSQL with ``--database-url``) with the local development provider, whose
``echo`` answers are free, so what is measured is Cortex's own cost of a task:
CreateTask (validation, a transaction with the row and its first journal entry),
the claim (a lease), the attempt's journal entries and events, the completion.

* throughput: ``--tasks`` tiny tasks created at once; tasks/s from the first
  CreateTask to the last SUCCEEDED (seen on the workspace event stream);
* create-to-running: one task at a time on an idle runner, from sending CreateTask
  to its RUNNING snapshot on a WatchTask (p50/p99);
* cancel: a task that runs for seconds (``CORTEX_LOCAL_LLM_DELAY`` paces its
  words), cancelled once it runs, from sending CancelTask to its CANCELLED
  snapshot on the watch (p50/p99);
* baseline: the same number of rows through a bare queue table on the same
  database, with as many claimers as the runner has workers: one INSERT per row,
  a claim (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional UPDATE on
  SQLite) and a completing UPDATE, each its own transaction: the database's own
  floor for three transactions per task. Reported as the ratio runner/baseline.

    python -m bench.tasks [--tasks 200] [--samples 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc.aio
import sqlalchemy as sa
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from cortex.experts.v1 import expert_service_pb2 as xpb
from cortex.experts.v1 import expert_service_pb2_grpc as xgrpc
from cortex.experts.v1 import task_pb2
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from google.protobuf import struct_pb2
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.load import percentile
from cortex_core.bootstrap import bootstrap
from cortex_core.server import start
from cortex_core.settings import Settings

WORKERS = 4
SLOW_WORDS = 400  # words of a task cancelled while it runs (seconds at the bench's delay)
DELAY = 0.01


def _input(text: str) -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update({"text": text})
    return value


class Bench:
    """A signed-in bench user on the in-process server."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.experts = xgrpc.ExpertServiceStub(channel)
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.workspace = ""

    async def sign_in(self) -> None:
        account = await auth_service_pb2_grpc.AuthServiceStub(self.channel).Register(
            auth_service_pb2.RegisterRequest(
                email=f"tasks-{uuid.uuid4().hex[:8]}@example.com",
                password="correct horse battery staple 42",
                display_name="Bench",
            ),
            timeout=30,
        )
        self.metadata = (("authorization", f"Bearer {account.access_token}"),)
        listed = await workspace_service_pb2_grpc.WorkspaceServiceStub(self.channel).ListWorkspaces(
            workspace_service_pb2.ListWorkspacesRequest(), metadata=self.metadata
        )
        self.workspace = listed.workspaces[0].name

    async def create(self, text: str) -> task_pb2.Task:
        response = await self.experts.CreateTask(
            xpb.CreateTaskRequest(
                parent=self.workspace, task=task_pb2.Task(expert="experts/echo", input=_input(text))
            ),
            metadata=self.metadata,
            timeout=30,
        )
        return response.task

    def watch(self, name: str, after: int) -> Any:
        return self.experts.WatchTask(
            xpb.WatchTaskRequest(name=name, after_sequence=after),
            metadata=self.metadata,
            timeout=60,
        )

    async def until(self, stream: Any, state: int) -> float:
        """Read ``stream`` until a snapshot in ``state``; the time it arrived."""
        async for frame in stream:
            if frame.WhichOneof("frame") == "task" and frame.task.state == state:
                return time.perf_counter()
        raise SystemExit(f"the watch ended before {task_pb2.TaskState.Name(state)}")

    async def throughput(self, count: int) -> float:
        """Tasks/s: ``count`` tasks created at once, until the last one SUCCEEDED."""
        events = event_service_pb2_grpc.EventServiceStub(self.channel).SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(workspaces=[self.workspace]),
            metadata=self.metadata,
        )
        await events.read()  # the first heartbeat: subscribed
        begin = time.perf_counter()
        names = {t.name for t in await asyncio.gather(*(self.create("x") for _ in range(count)))}
        done: set[str] = set()
        async with asyncio.timeout(600):
            while True:
                frame = await events.read()
                if frame.WhichOneof("frame") != "event":
                    continue
                change = frame.event.task_state_changed
                if change.task.name in names and change.task.state in (
                    task_pb2.TASK_STATE_SUCCEEDED,
                    task_pb2.TASK_STATE_FAILED,
                ):
                    if change.task.state != task_pb2.TASK_STATE_SUCCEEDED:
                        raise SystemExit(f"a task failed: {change.task.error}")
                    done.add(change.task.name)
                    if len(done) == count:
                        break
        elapsed = time.perf_counter() - begin
        events.cancel()
        return count / elapsed

    async def create_to_running(self) -> float:
        begin = time.perf_counter()
        created = await self.create("x")
        stream = self.watch(created.name, created.last_sequence)
        running = await self.until(stream, task_pb2.TASK_STATE_RUNNING)
        await self.until(stream, task_pb2.TASK_STATE_SUCCEEDED)  # idle again for the next
        return running - begin

    async def cancel_latency(self) -> float:
        created = await self.create(" ".join(f"w{i}" for i in range(SLOW_WORDS)))
        stream = self.watch(created.name, created.last_sequence)
        await self.until(stream, task_pb2.TASK_STATE_RUNNING)
        await asyncio.sleep(0.05)  # its model stream is under way
        begin = time.perf_counter()
        await self.experts.CancelTask(
            xpb.CancelTaskRequest(name=created.name), metadata=self.metadata, timeout=10
        )
        return await self.until(stream, task_pb2.TASK_STATE_CANCELLED) - begin


async def bare_queue(url: str, count: int, workers: int) -> float:
    """Rows/s through a bare queue table: insert, claim, complete (one transaction each)."""
    engine: AsyncEngine = create_async_engine(url)
    postgres = engine.dialect.name == "postgresql"
    table = f"bench_queue_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(
            sa.text(f"CREATE TABLE {table} (id VARCHAR(32) PRIMARY KEY, state VARCHAR(16))")
        )
    claim = (
        f"SELECT id FROM {table} WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        if postgres
        else f"UPDATE {table} SET state = 'running' WHERE id = (SELECT id FROM {table} "
        "WHERE state = 'queued' ORDER BY id LIMIT 1) AND state = 'queued' RETURNING id"
    )
    finished = 0

    async def produce() -> None:
        for i in range(count):
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(f"INSERT INTO {table} VALUES (:id, 'queued')"), {"id": f"{i:08d}"}
                )

    async def consume() -> None:
        nonlocal finished
        while finished < count:
            async with engine.begin() as conn:
                row = (await conn.execute(sa.text(claim))).first()
                if row is not None and postgres:
                    await conn.execute(
                        sa.text(f"UPDATE {table} SET state = 'running' WHERE id = :id"),
                        {"id": row[0]},
                    )
            if row is None:
                await asyncio.sleep(0.001)
                continue
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(f"UPDATE {table} SET state = 'done' WHERE id = :id"), {"id": row[0]}
                )
            finished += 1

    begin = time.perf_counter()
    await asyncio.gather(produce(), *(consume() for _ in range(workers)))
    elapsed = time.perf_counter() - begin
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"DROP TABLE {table}"))
    await engine.dispose()
    return count / elapsed


async def _serving(data_dir: Path, args: argparse.Namespace, delay: float) -> Any:
    settings = Settings(
        grpc_address="127.0.0.1:0",
        data_dir=data_dir,
        database_url=args.database_url,
        access_log=False,
        local_llm_delay=delay,
        task_workers=WORKERS,
        task_queue_limit=max(100, args.tasks * 2),
    )
    return settings, await start(bootstrap(settings))


async def run(data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    # Free model answers for throughput and create-to-running; paced ones (a task that
    # runs for seconds) for cancel: one server each, on the same database.
    for delay in (0.0, DELAY):
        settings, running = await _serving(data_dir, args, delay)
        channel = grpc.aio.insecure_channel(running.address)
        try:
            bench = Bench(channel)
            await bench.sign_in()
            if delay == 0.0:
                for _ in range(3):  # warm up connections and code paths
                    await bench.create_to_running()
                results["tasks_per_s"] = await bench.throughput(args.tasks)
                results["create_to_running"] = [
                    await bench.create_to_running() for _ in range(args.samples)
                ]
            else:
                results["cancel"] = [await bench.cancel_latency() for _ in range(args.samples)]
        finally:
            await channel.close()
            await running.drain()
    url = settings.effective_database_url
    results["baseline_per_s"] = await bare_queue(url, args.tasks, WORKERS)
    results["database"] = url.split(":", 1)[0]
    return results


def _ms(samples: list[float], q: float) -> float:
    return (statistics.median(samples) if q == 50 else percentile(samples, q)) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks for the throughput run")
    parser.add_argument("--samples", type=int, default=30, help="latency samples of each kind")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        r = uvloop.run(run(Path(data_dir), args))
    print(f"Tasks through the runner ({r['database']}, {WORKERS} workers, local-dev provider)")
    print(f"  throughput: {r['tasks_per_s']:8.1f} tasks/s ({args.tasks} tasks at once)")
    print(
        f"  baseline:   {r['baseline_per_s']:8.1f} rows/s through a bare queue table"
        f" (insert, claim, complete); runner/baseline {r['tasks_per_s'] / r['baseline_per_s']:.2f}"
    )
    for label, key in (("create-to-running", "create_to_running"), ("cancel", "cancel")):
        samples = r[key]
        print(
            f"  {label:<18} n={len(samples):<4} p50 {_ms(samples, 50):8.2f} ms"
            f"   p99 {_ms(samples, 99):8.2f} ms"
        )


if __name__ == "__main__":
    sys.exit(main())
