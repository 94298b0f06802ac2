"""SIGTERM's drain, through the real server: a running task is handed back
(QUEUED, not counted as a failure) and the next start finishes it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from support.inprocess import running_app
from support.tasks import seed

from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.domain.tasks import WORKER_SHUTDOWN, TaskState


async def test_a_draining_server_hands_its_running_task_back_and_the_next_start_finishes_it(
    db_url: str, tmp_path: Path
) -> None:
    database = SqlDatabase.from_url(db_url)
    await database.migrate()
    caller = await seed(database)
    await database.dispose()
    words = " ".join(["w"] * 400)  # 20 s of words at 0.05 s each: longer than the grace
    async with running_app(
        tmp_path, database_url=db_url, local_llm_delay=0.05, shutdown_grace=2.0
    ) as running:
        tasks = running.app.tasks
        assert tasks is not None
        created = await tasks.create(caller, "w1", "echo", {"text": words})
        deadline = time.monotonic() + 20
        while (await tasks.get(caller, "w1", created.id)).state is not TaskState.RUNNING:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        started = time.monotonic()
        await running.drain()
        assert time.monotonic() - started < 2.5
    database = SqlDatabase.from_url(db_url)
    try:
        async with database.unit_of_work() as uow:
            handed = await uow.tasks.get("w1", created.id)
        assert handed is not None
        assert handed.state is TaskState.QUEUED
        assert handed.lease_owner == ""
        assert [a.error.reason for a in handed.attempts if a.error] == [WORKER_SHUTDOWN]
        assert handed.failed_attempts == 0
    finally:
        await database.dispose()
    async with running_app(tmp_path, database_url=db_url) as running:
        tasks = running.app.tasks
        assert tasks is not None
        deadline = time.monotonic() + 30
        while not (task := await tasks.get(caller, "w1", created.id)).state.terminal:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert task.state is TaskState.SUCCEEDED
        assert task.attempt_count == 2
