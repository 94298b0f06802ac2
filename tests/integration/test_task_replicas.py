"""Tasks across replicas and outages: concurrent claims on one database, a cancel
carried by Redis to the replica that runs the task, and a PostgreSQL that stops
and starts again under a running runner."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from redis.asyncio import Redis
from support.databases import require_env
from support.postgres import private_postgres
from support.tasks import FAST, Runner, harness, in_state, seed, wait_for

from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.redis.task_signals import RedisTaskSignals
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.domain.tasks import TaskAttempt, TaskKind, TaskState
from cortex_core.services.supervisor import Loop, LoopStatus, Supervisor

DONE = in_state(TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


async def test_concurrent_claims_take_each_task_exactly_once(database: SqlDatabase) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        made = {(await h.tasks.create(caller, "w1", "echo", {"text": str(n)})).id for n in range(6)}
        clock = SystemClock()

        async def claim(worker: str) -> str | None:
            async with database.unit_of_work() as uow:
                now = clock.now()
                task = await uow.tasks.claim_next(now, [TaskKind.EXPERT])
                if task is None:
                    return None
                claimed = task.moved(
                    TaskState.RUNNING,
                    now,
                    attempts=(TaskAttempt(1, now, worker),),
                    lease_owner=worker,
                    lease_until=now + timedelta(seconds=30),
                )
                if not await uow.tasks.save(claimed, expected=task.fence):
                    return None
                await uow.commit()
                return task.id

        won: list[str] = []
        for _ in range(30):  # rounds of 12 claimers racing for what is left
            results = await asyncio.gather(*(claim(f"w{i}") for i in range(12)))
            won.extend(r for r in results if r is not None)
            if len(won) >= len(made):
                break
        assert sorted(won) == sorted(made)  # every task once, none twice


async def test_two_runners_sharing_a_database_never_run_a_task_twice(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database, delay=0.01) as h:
        first, second = h.runner("replica-a"), h.runner("replica-b")
        await first.start()
        await second.start()
        made = [
            await h.tasks.create(
                caller, "w1", "guarded", {"text": f'/call testing.echo {{"n": {n}}}'}
            )
            for n in range(24)
        ]
        finished = [await wait_for(h.tasks, caller, t.id, DONE, within=60) for t in made]
        assert {t.state for t in finished} == {TaskState.SUCCEEDED}
        assert all(t.attempt_count == 1 for t in finished)
        assert h.tools.calls["echo"] == 24  # each tool call made once, by one worker
        assert {t.attempts[0].worker for t in finished} == {"replica-a", "replica-b"}


async def test_a_workspace_never_runs_more_tasks_at_once_than_its_cap_over_every_replica(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    capped = dataclasses.replace(FAST, workspace_running=2)
    async with harness(database, delay=0.02, policy=capped) as h:
        for name in ("replica-a", "replica-b"):  # 8 workers between them
            await h.runner(name).start()
        text = " ".join(f"w{n}" for n in range(15))  # about 0.3 s an attempt
        made = [await h.tasks.create(caller, "w1", "echo", {"text": text}) for _ in range(8)]
        finished = [await wait_for(h.tasks, caller, t.id, DONE, within=60) for t in made]

    assert {t.state for t in finished} == {TaskState.SUCCEEDED}
    spans = [(t.attempts[0].start_time, t.attempts[0].end_time) for t in finished]
    # The most attempts that ever ran at once, from their stored start and end times.
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running, most = 0, 0
    for _, step in edges:
        running += step
        most = max(most, running)
    assert most == 2


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(require_env("CORTEX_TEST_REDIS_URL"))
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_cancel_reaches_the_replica_running_the_task_through_redis(
    database: SqlDatabase, redis_client: Redis
) -> None:
    caller = await seed(database)
    prefix = f"test:{uuid.uuid4().hex}:"
    # No database poll within the test (the first heartbeat would come after 120 s):
    # only the Redis signal can stop the attempt before its 10 s of words are done.
    slow_poll = dataclasses.replace(FAST, lease=300.0, heartbeat=120.0)
    async with harness(database, delay=0.05, policy=slow_poll) as h:
        here = RedisTaskSignals(redis_client, prefix=prefix)  # the replica taking the cancel
        there = RedisTaskSignals(
            Redis.from_url(require_env("CORTEX_TEST_REDIS_URL")), prefix=prefix
        )
        listeners = Supervisor()
        loops = await listeners.start([Loop("here", here.listen), Loop("there", there.listen)])
        try:
            h.tasks.signals = here
            runner: Runner = h.runner("replica-b", signals=there)
            await runner.start()
            created = await h.tasks.create(caller, "w1", "echo", {"text": " ".join(["w"] * 200)})
            await wait_for(h.tasks, caller, created.id, lambda t: t.last_sequence >= 4)
            await h.tasks.cancel(caller, "w1", created.id)
            task = await wait_for(h.tasks, caller, created.id, DONE, within=8)
            assert task.state is TaskState.CANCELLED
            assert runner.runner.running == 0  # the attempt itself stopped
            assert dict(task.output or {})["text"].startswith("[local-dev] w")
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await there._client.aclose()


async def test_the_runner_recovers_by_itself_after_postgresql_stops_and_starts(
    tmp_path: object,
) -> None:
    with private_postgres() as postgres:
        database = SqlDatabase.from_url(postgres.url, wait=2.0)
        await database.migrate()
        try:
            caller = await seed(database)
            async with harness(database, delay=0.05) as h:
                runner = h.runner()
                await runner.start()
                before = await h.tasks.create(caller, "w1", "echo", {"text": "before"})
                await wait_for(h.tasks, caller, before.id, DONE)
                running = await h.tasks.create(caller, "w1", "echo", {"text": " ".join(["w"] * 60)})
                await wait_for(h.tasks, caller, running.id, in_state(TaskState.RUNNING))

                postgres.stop()
                deadline = time.monotonic() + 30
                while runner.supervisor.states["tasks"].status is not LoopStatus.BACKING_OFF:
                    assert time.monotonic() < deadline, "the runner never noticed the outage"
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2.5)  # longer than the lease: the attempt stops itself
                assert runner.runner.running == 0
                postgres.start()

                task = await wait_for(h.tasks, caller, running.id, DONE, within=60)
                assert task.state is TaskState.SUCCEEDED
                after = await h.tasks.create(caller, "w1", "echo", {"text": "after"})
                assert (await wait_for(h.tasks, caller, after.id, DONE)).state is (
                    TaskState.SUCCEEDED
                )
                assert runner.supervisor.states["tasks"].status is LoopStatus.RUNNING
        finally:
            await database.dispose()
