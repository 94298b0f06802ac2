"""Helpers for task tests over the wire: an ExpertService client, watching, waiting.

Tasks are run by the default ``echo`` expert (input ``{"text": ...}``) on the local
development provider; its directives in the text steer the attempt (``/output``,
``/fail N``, ``/ask {schema}``; see ``adapters/llm/local.py``), and
``CORTEX_LOCAL_LLM_DELAY`` paces its words, so a long text makes a slow task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio
from cortex.experts.v1 import expert_service_pb2 as xpb
from cortex.experts.v1 import expert_service_pb2_grpc as xgrpc
from cortex.experts.v1 import task_pb2
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from support.clients import Account
from support.events import EventsClient

QUEUED = task_pb2.TASK_STATE_QUEUED
RUNNING = task_pb2.TASK_STATE_RUNNING
SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
FAILED = task_pb2.TASK_STATE_FAILED
CANCELLED = task_pb2.TASK_STATE_CANCELLED
INPUT_REQUIRED = task_pb2.TASK_STATE_INPUT_REQUIRED
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ECHO = "experts/echo"


def words(count: int, prefix: str = "w") -> str:
    """A text of ``count`` distinct words: the echo expert quotes it back word by word."""
    return " ".join(f"{prefix}{i}" for i in range(count))


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def state_name(state: int) -> str:
    return str(task_pb2.TaskState.Name(state))


class TasksClient(EventsClient):
    """An ``EventsClient`` with the ExpertService stub."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.experts = xgrpc.ExpertServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    async def create(
        self,
        account: Account,
        workspace: str,
        text: str = "hello",
        *,
        expert: str = ECHO,
        task_input: dict[str, Any] | None = None,
        max_attempts: int = 0,
        request_id: str = "",
        metadata: Sequence[tuple[str, str]] = (),
    ) -> task_pb2.Task:
        response = await self.experts.CreateTask(
            xpb.CreateTaskRequest(
                parent=workspace,
                task=task_pb2.Task(
                    expert=expert,
                    input=struct(task_input if task_input is not None else {"text": text}),
                    max_attempts=max_attempts,
                ),
                request_id=request_id,
            ),
            metadata=account.metadata() + list(metadata),
            timeout=15,
        )
        return response.task

    async def get(self, account: Account, name: str) -> task_pb2.Task:
        response = await self.experts.GetTask(
            xpb.GetTaskRequest(name=name), metadata=account.metadata(), timeout=15
        )
        return response.task

    async def cancel(self, account: Account, name: str) -> task_pb2.Task:
        response = await self.experts.CancelTask(
            xpb.CancelTaskRequest(name=name), metadata=account.metadata(), timeout=15
        )
        return response.task

    async def provide(
        self, account: Account, name: str, request_id: str, answer: dict[str, Any]
    ) -> task_pb2.Task:
        response = await self.experts.ProvideTaskInput(
            xpb.ProvideTaskInputRequest(
                name=name, input_request_id=request_id, input=struct(answer)
            ),
            metadata=account.metadata(),
            timeout=15,
        )
        return response.task

    def watch(self, account: Account, name: str, after_sequence: int = 0) -> Any:
        return self.experts.WatchTask(
            xpb.WatchTaskRequest(name=name, after_sequence=after_sequence),
            metadata=account.metadata(),
        )

    async def health_status(self, service: str) -> int:
        response = await self.health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(response.status)


async def until_state(
    clients: TasksClient | Sequence[TasksClient],
    account: Account,
    name: str,
    states: frozenset[int] | set[int],
    within: float = 30.0,
    interval: float = 0.05,
) -> task_pb2.Task:
    """Poll GetTask (round robin over ``clients``, skipping ones that fail) until the
    task is in one of ``states``; fails after ``within`` seconds."""
    pool = [clients] if isinstance(clients, TasksClient) else list(clients)
    deadline = time.monotonic() + within
    last: task_pb2.Task | None = None
    turn = 0
    while time.monotonic() < deadline:
        client = pool[turn % len(pool)]
        turn += 1
        try:
            last = await client.get(account, name)
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
        else:
            if last.state in states:
                return last
        await asyncio.sleep(interval)
    shown = state_name(last.state) if last is not None else "no answer"
    raise AssertionError(f"{name} did not reach {sorted(map(state_name, states))}: {shown}")


@dataclasses.dataclass
class Watched:
    """What a watch read: its frames (heartbeats left out) and how it ended."""

    frames: list[xpb.WatchTaskResponse]
    error: grpc.aio.AioRpcError | None = None

    @property
    def sequences(self) -> list[int]:
        return [int(f.sequence) for f in self.frames]

    @property
    def last_task(self) -> task_pb2.Task | None:
        tasks = [f.task for f in self.frames if f.WhichOneof("frame") == "task"]
        return tasks[-1] if tasks else None


async def watch_to_end(
    client: TasksClient,
    account: Account,
    name: str,
    after_sequence: int = 0,
    *,
    within: float = 60.0,
    limit: int | None = None,
) -> Watched:
    """Read a watch until it ends (OK or an error) or ``limit`` frames were read (then
    hang up); heartbeats are dropped."""
    stream = client.watch(account, name, after_sequence)
    frames: list[xpb.WatchTaskResponse] = []
    try:
        async with asyncio.timeout(within):
            while limit is None or len(frames) < limit:
                frame = await stream.read()
                if frame is grpc.aio.EOF:
                    return Watched(frames)
                if frame.WhichOneof("frame") != "heartbeat":
                    frames.append(frame)
    except grpc.aio.AioRpcError as error:
        return Watched(frames, error)
    finally:
        stream.cancel()
    return Watched(frames)


def output_text(frames: Sequence[xpb.WatchTaskResponse], attempt: int | None = None) -> str:
    """The output text the frames carried (of one attempt, or of every attempt)."""
    return "".join(
        f.output_delta.text
        for f in frames
        if f.WhichOneof("frame") == "output_delta"
        and (attempt is None or f.output_delta.attempt == attempt)
    )


def new_request_id() -> str:
    return str(uuid.uuid4())


__all__ = [
    "CANCELLED",
    "ECHO",
    "FAILED",
    "INPUT_REQUIRED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "TERMINAL",
    "TasksClient",
    "Watched",
    "new_request_id",
    "output_text",
    "state_name",
    "struct",
    "until_state",
    "watch_to_end",
    "words",
]
