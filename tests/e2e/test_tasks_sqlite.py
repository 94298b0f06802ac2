"""Tasks on the embedded defaults: one ``cortex-core serve`` on SQLite, no Redis.

The whole lifecycle as a client sees it (create, watch from the start to the end,
list), a task waiting for input across a restart of the only process, and a task
cancelled while it runs.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from google.protobuf import json_format
from support.events import JWT_SECRET
from support.servers import cortex_server
from support.task_client import (
    CANCELLED,
    INPUT_REQUIRED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    TasksClient,
    output_text,
    until_state,
    watch_to_end,
    words,
)

ASK = json.dumps(
    {"type": "object", "properties": {"approve": {"type": "boolean"}}, "required": ["approve"]}
)


def _env(tmp_path: Path, delay: float = 0.0) -> dict[str, str]:
    return {
        "CORTEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tasks.db'}",
        "CORTEX_JWT_SECRET": JWT_SECRET,
        "CORTEX_EVENTS_HEARTBEAT": "0.5",
        "CORTEX_LOCAL_LLM_DELAY": str(delay),
    }


async def test_a_task_runs_from_queued_to_succeeded_and_its_watch_shows_every_step(
    tmp_path: Path,
) -> None:
    with cortex_server(tmp_path / "one", _env(tmp_path, 0.02)) as server:
        client = TasksClient(server.address)
        alice = await client.register()
        workspace = str((await client.first_workspace(alice)).name)
        created = await client.create(alice, workspace, "the quick brown fox")
        watched = await watch_to_end(client, alice, created.name, created.last_sequence)
        done = await client.get(alice, created.name)
        from cortex.experts.v1 import expert_service_pb2 as xpb

        listed = await client.experts.ListTasks(
            xpb.ListTasksRequest(parent=workspace), metadata=alice.metadata(), timeout=10
        )
        await client.close()

    assert created.state in (1, 2)  # QUEUED, or already claimed
    assert created.name.startswith(f"{workspace}/tasks/")
    assert created.expert == "experts/echo"
    assert watched.error is None
    states = [f.task.state for f in watched.frames if f.WhichOneof("frame") == "task"]
    assert RUNNING in states
    assert states[-1] == SUCCEEDED
    assert done.state == SUCCEEDED
    assert done.complete_time.seconds > 0
    assert done.last_sequence == watched.frames[-1].sequence
    output = json_format.MessageToDict(done.output)
    assert output_text(watched.frames) == output["text"]
    assert "quick brown fox" in output["text"]
    assert [t.name for t in listed.tasks] == [created.name]


async def test_a_waiting_task_survives_a_restart_of_the_only_process(tmp_path: Path) -> None:
    env = _env(tmp_path)
    with cortex_server(tmp_path / "before", env) as server:
        client = TasksClient(server.address)
        alice = await client.register()
        workspace = str((await client.first_workspace(alice)).name)
        created = await client.create(alice, workspace, f"/ask {ASK}")
        waiting = await until_state(client, alice, created.name, {INPUT_REQUIRED})
        await client.close()
        assert server.terminate() == 0
    with cortex_server(tmp_path / "after", env) as server:
        client = TasksClient(server.address)
        assert (await client.get(alice, created.name)).state == INPUT_REQUIRED
        await client.provide(alice, created.name, waiting.input_request.id, {"approve": True})
        done = await until_state(client, alice, created.name, TERMINAL)
        await client.close()
    assert done.state == SUCCEEDED, done.error


async def test_a_running_task_is_cancelled_keeps_its_partial_output_and_stays_cancelled(
    tmp_path: Path,
) -> None:
    with cortex_server(tmp_path / "one", _env(tmp_path, 0.2)) as server:
        client = TasksClient(server.address)
        alice = await client.register()
        workspace = str((await client.first_workspace(alice)).name)
        created = await client.create(alice, workspace, words(60))
        await until_state(client, alice, created.name, {RUNNING})
        await client.cancel(alice, created.name)
        done = await until_state(client, alice, created.name, TERMINAL, interval=0.02)
        await asyncio.sleep(2.0)  # ~10 more words, had the attempt gone on
        later = await client.get(alice, created.name)
        watched = await watch_to_end(client, alice, created.name, created.last_sequence)
        await client.close()
    assert done.state == CANCELLED
    assert later.state == CANCELLED
    assert later.last_sequence == done.last_sequence  # nothing written after the end
    states = [f.task.state for f in watched.frames if f.WhichOneof("frame") == "task"]
    assert SUCCEEDED not in states
    assert states[-1] == CANCELLED
    partial = output_text(watched.frames)
    assert len(partial.split()) < 60
    # Kept as the watch showed it (nothing, when cancelled before its first word).
    assert json_format.MessageToDict(later.output) == ({"text": partial} if partial else {})
