"""Tasks across replicas: ``cortex-core serve`` processes sharing one database and one Redis.

The database is PostgreSQL from ``CORTEX_TEST_DATABASE_URL`` (required when
``CI=true``; one SQLite file otherwise) and each test has a private
``redis-server``. Tasks run on the default ``echo`` expert over the local
development provider, paced by ``CORTEX_LOCAL_LLM_DELAY`` so an attempt lasts
long enough to kill, cancel or watch it.

Where a test needs to know which replica runs a task, it starts only that
replica until the task is RUNNING, then starts the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from google.protobuf import json_format
from support.events import JWT_SECRET, own_redis, shared_database
from support.rpc import details
from support.servers import ServerProcess, cortex_server
from support.task_client import (
    CANCELLED,
    INPUT_REQUIRED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    TasksClient,
    output_text,
    state_name,
    until_state,
    watch_to_end,
    words,
)

# Seconds per word of the local provider: its reply quotes 40 words of the input, so an
# attempt lasts about 50 * DELAY seconds.
DELAY = 0.2
ASK = json.dumps(
    {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
)


@contextlib.asynccontextmanager
async def backing(tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """The environment of every replica: the shared database and a private Redis."""
    async with (
        shared_database(tmp_path) as database_url,
        own_redis(tmp_path / "redis") as redis_server,
    ):
        yield {
            "CORTEX_DATABASE_URL": database_url,
            "CORTEX_REDIS_URL": redis_server.url,
            "CORTEX_JWT_SECRET": JWT_SECRET,
            "CORTEX_ACCESS_LOG": "false",
            "CORTEX_EVENTS_HEARTBEAT": "0.5",
            "CORTEX_LOCAL_LLM_DELAY": str(DELAY),
        }


@contextlib.contextmanager
def replica(tmp_path: Path, name: str, env: dict[str, str]) -> Iterator[ServerProcess]:
    with cortex_server(tmp_path / name, env) as server:
        yield server


async def first_output(client: TasksClient, account: object, name: str) -> int:
    """Wait for the running attempt's first output text; the sequence it came with."""
    watched = await watch_to_end(client, account, name, within=30, limit=50)  # type: ignore[arg-type]
    for frame in watched.frames:
        if frame.WhichOneof("frame") == "output_delta":
            return int(frame.sequence)
    raise AssertionError(f"no output within {len(watched.frames)} frames: {watched.error}")


def attempt_reason(attempt: object) -> str:
    error = attempt.error  # type: ignore[attr-defined]
    from google.rpc import error_details_pb2

    for detail in error.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


# --- 1. a replica killed mid-task -----------------------------------------------------


@pytest.mark.timeout(300)
async def test_a_task_whose_replica_is_killed_mid_attempt_finishes_once_on_another(
    tmp_path: Path,
) -> None:
    async with backing(tmp_path) as env:
        with replica(tmp_path, "a", env) as a:
            client_a = TasksClient(a.address)
            alice = await client_a.register()
            workspace = str((await client_a.first_workspace(alice)).name)
            # About 30 s an attempt: long enough to start B and kill A while it runs.
            created = await client_a.create(alice, workspace, words(150))
            await until_state(client_a, alice, created.name, {RUNNING})
            await first_output(client_a, alice, created.name)
            await client_a.close()
            with replica(tmp_path, "b", env) as b:
                client_b = TasksClient(b.address)
                assert (await client_b.get(alice, created.name)).state == RUNNING
                a.process.kill()  # SIGKILL: no drain, the lease is simply never renewed
                a.process.wait()
                killed_at = time.monotonic()
                while (await client_b.get(alice, created.name)).attempt_count < 2:
                    assert time.monotonic() - killed_at < 40, "not retried elsewhere"
                    await asyncio.sleep(0.1)
                retried_in = time.monotonic() - killed_at
                try:  # a liveness bound, generous for a loaded machine (not a speed goal)
                    done = await until_state(client_b, alice, created.name, TERMINAL, within=150)
                except AssertionError as error:  # say what B was doing
                    raise AssertionError(f"{error}\nreplica B's log:\n{b.logs()[-6000:]}") from None
                journal = await watch_to_end(client_b, alice, created.name, created.last_sequence)
                await client_b.close()

    assert done.state == SUCCEEDED, state_name(done.state)
    assert retried_in < 30, retried_in  # the lease (CORTEX_TASK_LEASE, 15 s) ran out
    assert done.attempt_count == 2
    assert attempt_reason(done.attempts[0]) == "WORKER_LOST"
    assert not done.attempts[1].HasField("error")
    # Finished once: one terminal snapshot in the journal, and the output is the second
    # attempt's text exactly (nothing of the lost attempt mixed in, nothing twice).
    states = [f.task.state for f in journal.frames if f.WhichOneof("frame") == "task"]
    assert states.count(SUCCEEDED) == 1
    assert states[-1] == SUCCEEDED
    assert journal.error is None
    output = json_format.MessageToDict(done.output)
    assert output_text(journal.frames, attempt=2) == output["text"]
    assert output["text"].count("w149") == 1


# --- 2. a watch resumed across many reconnects ---------------------------------------


async def test_a_watch_resumed_on_alternating_replicas_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    async with backing(tmp_path) as env:
        with replica(tmp_path, "a", env) as a, replica(tmp_path, "b", env) as b:
            clients = [TasksClient(a.address), TasksClient(b.address)]
            alice = await clients[0].register()
            workspace = str((await clients[0].first_workspace(alice)).name)
            created = await clients[0].create(alice, workspace, words(60))
            start = int(created.last_sequence)

            whole = asyncio.create_task(
                watch_to_end(clients[1], alice, created.name, start, within=120)
            )
            pieces = []
            position, connections = start, 0
            async with asyncio.timeout(120):
                while True:
                    client = clients[connections % 2]
                    few = 1 + connections % 3
                    connections += 1
                    piece = await watch_to_end(client, alice, created.name, position, limit=few)
                    assert piece.error is None, piece.error
                    pieces.extend(piece.frames)
                    if piece.frames:
                        position = int(piece.frames[-1].sequence)
                    if len(piece.frames) < few:  # the stream ended by itself: terminal
                        break
            uninterrupted = await whole
            for client in clients:
                await client.close()

    assert connections > 10
    sequences = [int(f.sequence) for f in pieces]
    assert sequences == list(range(start + 1, start + 1 + len(sequences)))
    assert [f.SerializeToString() for f in pieces] == [
        f.SerializeToString() for f in uninterrupted.frames
    ]
    assert uninterrupted.error is None
    last = pieces[-1]
    assert last.WhichOneof("frame") == "task"
    assert last.task.state == SUCCEEDED
    kinds = {f.WhichOneof("frame") for f in pieces}
    assert {"task", "output_delta"} <= kinds


# --- 3. waiting for input across a restart --------------------------------------------


async def test_a_task_waiting_for_input_survives_a_restart_and_resumes_once(
    tmp_path: Path,
) -> None:
    async with backing(tmp_path) as env:
        env = {**env, "CORTEX_LOCAL_LLM_DELAY": "0"}
        with replica(tmp_path, "a", env) as a:
            client = TasksClient(a.address)
            alice = await client.register()
            workspace = str((await client.first_workspace(alice)).name)
            created = await client.create(alice, workspace, f"/ask {ASK}")
            waiting = await until_state(client, alice, created.name, {INPUT_REQUIRED})
            await client.close()
            assert a.terminate() == 0
        request = waiting.input_request
        assert request.id
        assert request.expire_time.seconds > 0
        assert json_format.MessageToDict(request.answer_schema)["required"] == ["answer"]

        with replica(tmp_path, "b", env) as b:
            client = TasksClient(b.address)
            after = await client.get(alice, created.name)
            assert after.state == INPUT_REQUIRED
            assert after.input_request.id == request.id
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await client.provide(alice, created.name, request.id, {"answer": 42})
            assert wrong.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert details(wrong.value)["BadRequest"].field_violations[0].field.startswith("input")
            resumed = await client.provide(alice, created.name, request.id, {"answer": "blue"})
            assert resumed.state in (QUEUED, RUNNING, SUCCEEDED)
            with pytest.raises(grpc.aio.AioRpcError) as again:
                await client.provide(alice, created.name, request.id, {"answer": "red"})
            assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            assert details(again.value)["ErrorInfo"].reason == "TASK_NOT_WAITING"
            done = await until_state(client, alice, created.name, TERMINAL)
            await client.close()

    assert done.state == SUCCEEDED, (state_name(done.state), done.error)
    assert "blue" in json.dumps(json_format.MessageToDict(done.output))


# --- 4. cancel from one replica, the task running on another ---------------------------


async def test_cancel_on_one_replica_stops_the_work_running_on_another_for_good(
    tmp_path: Path,
) -> None:
    """Behaviour, not speed (cancel latency is measured in bench/tasks.py): the attempt
    on A really stops (A's runner counts it cancelled, no word is journaled after it,
    its partial output is kept) and the terminal state never changes again."""
    async with backing(tmp_path) as env:
        with replica(tmp_path, "a", {**env, "CORTEX_METRICS_ADDRESS": "127.0.0.1:0"}) as a:
            client_a = TasksClient(a.address)
            alice = await client_a.register()
            workspace = str((await client_a.first_workspace(alice)).name)
            # About 30 s an attempt: still running once B has started.
            created = await client_a.create(alice, workspace, words(150))
            await until_state(client_a, alice, created.name, {RUNNING})
            await first_output(client_a, alice, created.name)
            with replica(tmp_path, "b", env) as b:
                client_b = TasksClient(b.address)
                assert (await client_b.get(alice, created.name)).state == RUNNING
                answer = await client_b.cancel(alice, created.name)
                done = await until_state(client_b, alice, created.name, TERMINAL, within=20)
                # Had the attempt gone on, it would have journaled ~10 more words by now.
                await asyncio.sleep(10 * DELAY)
                later = await client_b.get(alice, created.name)
                journal = await watch_to_end(client_b, alice, created.name, created.last_sequence)
                again = await client_b.cancel(alice, created.name)
                await client_b.close()
            metrics = re.search(r"metrics on (http://\S+/metrics)", a.logs())
            assert metrics is not None, a.logs()
            scraped = await asyncio.to_thread(_scrape, metrics.group(1))
            await client_a.close()

    assert answer.state in (RUNNING, CANCELLED)
    assert done.state == CANCELLED, state_name(done.state)
    # The worker on A stopped the attempt itself, as cancelled.
    assert 'cortex_task_attempts_total{expert="echo",outcome="cancelled"} 1.0' in scraped
    assert 'outcome="succeeded"' not in scraped
    assert later.last_sequence == done.last_sequence  # nothing journaled after it
    assert later.state == CANCELLED
    assert later.complete_time == done.complete_time
    assert again.state == CANCELLED  # idempotent
    states = [f.task.state for f in journal.frames if f.WhichOneof("frame") == "task"]
    assert SUCCEEDED not in states
    assert states[-1] == CANCELLED
    partial = output_text(journal.frames)
    assert partial, "the partial output is kept"
    assert json_format.MessageToDict(later.output) == {"text": partial}
    assert len(partial.split()) < 150  # stopped before the end
    assert journal.error is None


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


# --- 5. the drain ends watches with their resume point -------------------------------------


async def test_sigterm_ends_watches_with_their_resume_point_and_another_replica_continues(
    tmp_path: Path,
) -> None:
    async with backing(tmp_path) as env:
        env = {**env, "CORTEX_SHUTDOWN_GRACE": "20"}
        with replica(tmp_path, "a", env) as a, replica(tmp_path, "b", env) as b:
            client_a, client_b = TasksClient(a.address), TasksClient(b.address)
            alice = await client_a.register()
            workspace = str((await client_a.first_workspace(alice)).name)
            created = await client_b.create(alice, workspace, words(60))
            start = int(created.last_sequence)
            stream = client_a.watch(alice, created.name, start)
            seen = []
            async with asyncio.timeout(30):
                while len(seen) < 3:
                    frame = await stream.read()
                    if frame.WhichOneof("frame") != "heartbeat":
                        seen.append(frame)
            a.process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                async with asyncio.timeout(15):
                    while True:
                        frame = await stream.read()
                        assert frame is not grpc.aio.EOF
                        if frame.WhichOneof("frame") != "heartbeat":
                            seen.append(frame)
            info = details(cut.value)
            resume = int(info["ErrorInfo"].metadata["after_sequence"])
            rest = await watch_to_end(client_b, alice, created.name, resume, within=60)
            await client_a.close()
            await client_b.close()

    assert cut.value.code() is grpc.StatusCode.UNAVAILABLE
    assert info["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"
    assert "RetryInfo" in info
    assert resume == int(seen[-1].sequence)
    sequences = [int(f.sequence) for f in seen + rest.frames]
    assert sequences == list(range(start + 1, start + 1 + len(sequences)))
    assert rest.last_task is not None
    assert rest.last_task.state == SUCCEEDED
