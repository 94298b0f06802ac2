"""Helpers for event-stream tests over real processes: a private Redis, replicas, a client.

``OwnRedis`` is a ``redis-server`` started by the test on a free port with its data
in the test's directory (AOF, fsync always, no RDB), so it can be SIGKILLed and
restarted without losing what it acknowledged, and never touches the shared Redis.

``replicas`` starts N ``cortex-core serve`` processes that share one database and
one Redis (and one JWT secret, so a token from one is valid on every other).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import redis.asyncio as redis
from cortex.events.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from cortex.sessions.v1.workspace_pb2 import Workspace
from google.protobuf import field_mask_pb2

from cortex_core.domain.event_records import EventEnvelope, EventKind, EventRecord
from cortex_core.ports import EventLog
from support.clients import Account, Client, auth_pb, workspace_pb
from support.databases import in_ci, postgres_database
from support.servers import ServerProcess, cortex_server

JWT_SECRET = "event-replicas-secret-" + "s" * 48
UPDATED = EventEnvelope(EventKind.WORKSPACE_UPDATED)


async def append(
    log: EventLog,
    stream: str,
    event_id: str,
    payload: bytes,
    now: datetime,
    envelope: EventEnvelope = UPDATED,
) -> EventRecord:
    """Append one record straight to ``log`` (what the relay does for a change)."""
    return await log.append(stream, event_id, envelope, payload, now)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_redis_server() -> str:
    """The ``redis-server`` binary; skip without it locally, fail in CI."""
    path = shutil.which("redis-server")
    if path:
        return path
    if in_ci():
        pytest.fail("redis-server must be on PATH when CI=true (event tests never skip in CI)")
    pytest.skip("redis-server is not on PATH")


class OwnRedis:
    """A private redis-server whose data survives SIGKILL (AOF, fsync always)."""

    def __init__(self, directory: Path) -> None:
        self.binary = require_redis_server()
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, within: float = 10.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        try:
            async with asyncio.timeout(within):
                while True:
                    if self.process.returncode is not None:
                        raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                    with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """SIGKILL: no shutdown save, only the fsynced AOF survives."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def own_redis(directory: Path) -> AsyncIterator[OwnRedis]:
    server = OwnRedis(directory)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@contextlib.asynccontextmanager
async def shared_database(tmp_path: Path) -> AsyncIterator[str]:
    """One database URL for every replica: a fresh PostgreSQL database when
    ``CORTEX_TEST_DATABASE_URL`` is set (required when ``CI=true``), else one SQLite file."""
    if os.environ.get("CORTEX_TEST_DATABASE_URL") or in_ci():
        async with postgres_database() as url:
            yield url
        return
    yield f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"


@contextlib.contextmanager
def replicas(tmp_path: Path, count: int, env: Mapping[str, str]) -> Iterator[list[ServerProcess]]:
    """``count`` servers started one after another (migrations never race)."""
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                cortex_server(
                    tmp_path / f"replica-{i}-{uuid.uuid4().hex[:6]}",
                    {
                        "CORTEX_JWT_SECRET": JWT_SECRET,
                        "CORTEX_ACCESS_LOG": "false",
                        "CORTEX_EVENTS_HEARTBEAT": "0.5",
                        **env,
                    },
                )
            )
            for i in range(count)
        ]
        yield servers


class EventsClient(Client):
    """A ``Client`` with the event stub and the one change these tests cause."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.events = event_service_pb2_grpc.EventServiceStub(self.channel)

    def subscribe(self, account: Account, **request: Any) -> Any:
        return self.events.SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(**request), metadata=account.metadata()
        )

    async def rename(self, account: Account, workspace: str, name: str) -> None:
        """One ``workspace_updated`` event (update_mask display_name)."""
        await self.workspaces.UpdateWorkspace(
            workspace_pb.UpdateWorkspaceRequest(
                workspace=Workspace(name=workspace, display_name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=account.metadata(),
            timeout=10,
        )

    async def logout(self, account: Account) -> None:
        await self.auth.Logout(auth_pb.LogoutRequest(), metadata=account.metadata(), timeout=10)


@contextlib.asynccontextmanager
async def clients(servers: list[ServerProcess]) -> AsyncIterator[list[EventsClient]]:
    made = [EventsClient(server.address) for server in servers]
    try:
        yield made
    finally:
        for client in made:
            await client.close()


async def read_frame(stream: Any, within: float = 10.0) -> Any:
    """The next frame (event, heartbeat or replay_unavailable); fails on EOF or timeout."""
    async with asyncio.timeout(within):
        frame = await stream.read()
    assert frame is not grpc.aio.EOF, "the stream ended without an error"
    return frame


async def opened(stream: Any, within: float = 10.0) -> str:
    """Wait for the first heartbeat (the subscription is registered); its resume token."""
    async with asyncio.timeout(within):
        while True:
            frame = await read_frame(stream, within)
            kind = frame.WhichOneof("frame")
            assert kind != "replay_unavailable", frame
            if kind == "heartbeat":
                return str(frame.heartbeat.resume_token)


async def next_event(stream: Any, within: float = 10.0) -> event_pb2.Event:
    """The next event frame, skipping heartbeats; fails on a replay gap."""
    async with asyncio.timeout(within):
        while True:
            frame = await read_frame(stream, within)
            kind = frame.WhichOneof("frame")
            assert kind != "replay_unavailable", frame
            if kind == "event":
                return frame.event


def renamed_to(event: event_pb2.Event) -> str:
    assert event.type == event_pb2.EVENT_TYPE_WORKSPACE_UPDATED, event
    assert list(event.workspace_updated.update_mask.paths) == ["display_name"]
    return str(event.workspace_updated.workspace.display_name)


async def ended(stream: Any, within: float = 10.0) -> grpc.aio.AioRpcError:
    """Read until the stream ends with an error (frames before it are dropped)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(within):
            while True:
                frame = await stream.read()
                assert frame is not grpc.aio.EOF, "the stream ended without an error"
    return caught.value


__all__ = [
    "JWT_SECRET",
    "EventsClient",
    "OwnRedis",
    "clients",
    "ended",
    "free_port",
    "next_event",
    "opened",
    "own_redis",
    "read_frame",
    "renamed_to",
    "replicas",
    "require_redis_server",
    "shared_database",
]
