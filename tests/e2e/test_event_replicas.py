"""SubscribeEvents across replicas: two ``cortex-core serve`` processes, one database, one Redis.

Each test starts its own ``redis-server`` (AOF, fsync always) on a free port, so
the server's fixed ``cortex:events:`` key prefix never meets another test's keys
and Redis can be SIGKILLed and restarted. Both replicas share one database
(PostgreSQL from ``CORTEX_TEST_DATABASE_URL``, required when ``CI=true``; one
SQLite file otherwise) and one JWT secret. Events are caused by renaming the
caller's personal workspace: one ``workspace_updated`` event per UpdateWorkspace.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from support.clients import Account
from support.events import (
    EventsClient,
    OwnRedis,
    clients,
    ended,
    next_event,
    opened,
    own_redis,
    read_frame,
    renamed_to,
    replicas,
    shared_database,
)
from support.rpc import details
from support.servers import ServerProcess


@dataclass
class Cluster:
    redis: OwnRedis
    servers: list[ServerProcess]
    a: EventsClient
    b: EventsClient


@contextlib.asynccontextmanager
async def cluster(tmp_path: Path, **env: str) -> AsyncIterator[Cluster]:
    """Replicas A and B on a private Redis and a shared database."""
    async with (
        shared_database(tmp_path) as database_url,
        own_redis(tmp_path / "redis") as redis_server,
    ):
        with replicas(
            tmp_path,
            2,
            {"CORTEX_DATABASE_URL": database_url, "CORTEX_REDIS_URL": redis_server.url, **env},
        ) as servers:
            async with clients(servers) as (a, b):
                yield Cluster(redis_server, servers, a, b)


async def personal_workspace(client: EventsClient, account: Account) -> str:
    return str((await client.first_workspace(account)).name)


async def quiet(stream: Any, heartbeats: int = 2) -> None:
    """Read until ``heartbeats`` heartbeats in a row: asserts no further event comes."""
    seen = 0
    while seen < heartbeats:
        frame = await read_frame(stream, within=5)
        assert frame.WhichOneof("frame") == "heartbeat", f"unexpected frame {frame}"
        seen += 1


# --- 1. fan-out across replicas ----------------------------------------------------------


async def test_a_subscriber_on_one_replica_receives_events_caused_on_another_in_order_once(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        alice = await c.a.register()
        workspace = await personal_workspace(c.a, alice)
        stream = c.b.subscribe(alice)
        try:
            await opened(stream)
            names = [f"fan-out {i}" for i in range(20)]
            for name in names:
                await c.a.rename(alice, workspace, name)

            events = [await next_event(stream) for _ in names]

            assert [renamed_to(e) for e in events] == names
            assert all(e.workspace == workspace and e.actor == alice.user for e in events)
            sequences = [e.sequence for e in events]
            assert sequences == list(range(sequences[0], sequences[0] + len(names)))
            assert all(e.resume_token for e in events)
            await quiet(stream)  # nothing twice
        finally:
            stream.cancel()


# --- 2. reconnecting, alternating replicas ------------------------------------------------


async def test_reconnecting_with_the_last_token_on_alternating_replicas_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        alice = await c.a.register()
        workspace = await personal_workspace(c.a, alice)
        published = [f"hop {i}" for i in range(60)]
        received: list[str] = []
        connections = 0

        first = c.a.subscribe(alice)
        try:
            token = await opened(first)  # live from here: the publisher may start
        finally:
            first.cancel()

        async def publish() -> None:
            for i, name in enumerate(published):
                await (c.a, c.b)[i % 2].rename(alice, workspace, name)
                await asyncio.sleep(0.01)

        publisher = asyncio.create_task(publish())
        try:
            async with asyncio.timeout(60):
                while len(received) < len(published):
                    replica = (c.b, c.a)[connections % 2]
                    few = 1 + connections % 4  # frames read before hanging up
                    connections += 1
                    stream = replica.subscribe(alice, resume_token=token)
                    try:
                        for _ in range(few):
                            frame = await read_frame(stream)
                            kind = frame.WhichOneof("frame")
                            assert kind != "replay_unavailable", frame
                            if kind == "event":
                                received.append(renamed_to(frame.event))
                                token = frame.event.resume_token
                            else:
                                token = frame.heartbeat.resume_token
                    finally:
                        stream.cancel()
            await asyncio.wait_for(publisher, 30)
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher

        assert received == published
        assert connections >= 20
        last = c.b.subscribe(alice, resume_token=token)
        try:
            await quiet(last)  # nothing after the 60th either
        finally:
            last.cancel()


# --- 5. logout on one replica ends streams on another ------------------------------------


async def test_logging_out_on_one_replica_ends_that_sessions_stream_on_another_quickly(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        alice = await c.a.register()
        other_session = await c.b.login(alice)
        stream = c.b.subscribe(alice)
        survivor = c.b.subscribe(other_session)
        try:
            await opened(stream)
            await opened(survivor)

            started = time.monotonic()
            await c.a.logout(alice)
            error = await ended(stream, within=5)
            elapsed = time.monotonic() - started

            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert details(error)["ErrorInfo"].reason == "SESSION_REVOKED"
            assert elapsed < 2.5, f"the stream ended {elapsed:.2f}s after logout"
            # The user's other session sees the revocation and keeps its stream.
            revoked = await next_event(survivor)
            assert revoked.session_revoked.session == alice.session
            await quiet(survivor)
        finally:
            stream.cancel()
            survivor.cancel()


# --- 4. a slow consumer ------------------------------------------------------------------

SMALL_WINDOW = [("grpc.http2.lookahead_bytes", 8192), ("grpc.http2.bdp_probe", 0)]


async def test_a_subscriber_that_does_not_read_is_ended_with_a_token_that_resumes_without_a_gap(
    tmp_path: Path,
) -> None:
    total = 200
    async with cluster(tmp_path, CORTEX_EVENTS_QUEUE_SIZE="8") as c:
        alice = await c.a.register()
        workspace = await personal_workspace(c.a, alice)
        # A channel of its own with a small, fixed HTTP/2 receive window (a client on a
        # slow link): otherwise gRPC's transport buffers hundreds of unread frames before
        # the server's queue of 8 is ever full.
        slow_channel = grpc.aio.insecure_channel(c.servers[1].address, options=SMALL_WINDOW)
        slow = event_service_pb2_grpc.EventServiceStub(slow_channel).SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(workspaces=[workspace]),
            metadata=alice.metadata(),
        )
        fast = c.b.subscribe(alice, workspaces=[workspace])
        try:
            token = await opened(slow)
            await opened(fast)

            async def read_fast() -> list[str]:
                return [renamed_to(await next_event(fast)) for _ in range(total)]

            fast_reader = asyncio.create_task(read_fast())
            published = [f"slow {i}" for i in range(total)]
            for name in published:
                await c.a.rename(alice, workspace, name)
            assert await asyncio.wait_for(fast_reader, 20) == published

            # Now read the slow stream: what the transport buffered, then the error.
            before: list[str] = []
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(10):
                    while True:
                        frame = await slow.read()
                        assert frame is not grpc.aio.EOF, "the slow stream ended without an error"
                        if frame.WhichOneof("frame") == "event":
                            before.append(renamed_to(frame.event))
                            token = frame.event.resume_token
                        else:
                            token = frame.heartbeat.resume_token
            error = caught.value
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            info = details(error)["ErrorInfo"]
            assert info.reason == "SUBSCRIBER_TOO_SLOW"
            trailing = dict(error.trailing_metadata() or ())
            assert trailing["cortex-resume-token"] == info.metadata["resume_token"]
            assert len(before) < total, "the slow subscriber was never ended"
            assert before == published[: len(before)]
            assert info.metadata["resume_token"] == token  # exactly what was delivered

            resumed = c.a.subscribe(
                alice, workspaces=[workspace], resume_token=info.metadata["resume_token"]
            )
            try:
                rest = [renamed_to(await next_event(resumed)) for _ in published[len(before) :]]
                assert before + rest == published
                await quiet(resumed)
            finally:
                resumed.cancel()
        finally:
            slow.cancel()
            fast.cancel()
            await slow_channel.close()


# --- 3. Redis killed and restarted under a stream ----------------------------------------


async def drain_until_down(stream: Any, received: list[str], token: str) -> str:
    """After Redis died: read what the stream still delivers until it ends with
    UNAVAILABLE (or stalls for 8 s); the token to resume from."""
    try:
        async with asyncio.timeout(8):
            while True:
                frame = await stream.read()
                assert frame is not grpc.aio.EOF, "the stream ended without an error"
                kind = frame.WhichOneof("frame")
                if kind == "event":
                    received.append(renamed_to(frame.event))
                    token = frame.event.resume_token
                elif kind == "heartbeat":
                    token = frame.heartbeat.resume_token
    except TimeoutError:
        return token  # stalled: resume from the last frame
    except grpc.aio.AioRpcError as caught:
        error = caught
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    info = details(error)["ErrorInfo"]
    assert info.reason == "EVENT_LOG_UNAVAILABLE"
    assert info.metadata["resume_token"] == token  # exactly what was delivered
    assert dict(error.trailing_metadata() or ())["cortex-resume-token"] == token
    return token


async def open_when_back(client: EventsClient, account: Account, token: str) -> tuple[Any, Any]:
    """Subscribe with ``token`` until the event log answers: (stream, its first frame)."""
    async with asyncio.timeout(20):
        while True:
            stream = client.subscribe(account, resume_token=token)
            try:
                return stream, await read_frame(stream)
            except grpc.aio.AioRpcError as caught:
                stream.cancel()
                code = caught.code()
            assert code == grpc.StatusCode.UNAVAILABLE, code
            await asyncio.sleep(0.2)


async def resume_after_restart(
    client: EventsClient, account: Account, token: str, received: list[str], expected: list[str]
) -> None:
    """Resume with ``token`` once the log answers; append events until ``expected`` is
    complete, then check that nothing else comes."""
    stream, first = await open_when_back(client, account, token)
    try:
        frame = first
        async with asyncio.timeout(15):
            while True:
                assert frame.WhichOneof("frame") != "replay_unavailable", frame
                if frame.WhichOneof("frame") == "event":
                    received.append(renamed_to(frame.event))
                if len(received) >= len(expected) or received[-1:] == expected[-1:]:
                    break
                frame = await read_frame(stream)
        assert received == expected
        await quiet(stream)
    finally:
        stream.cancel()


async def test_after_redis_is_killed_and_restarted_resuming_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        alice = await c.a.register()
        workspace = await personal_workspace(c.a, alice)
        before = [f"before {i}" for i in range(10)]
        after = [f"after {i}" for i in range(10)]
        # ``live`` is open on B when Redis dies; ``early`` (on A) hung up after 5
        # events, so the rest of ``before`` must come back from Redis's AOF.
        live_received: list[str] = []
        early_received: list[str] = []
        live = c.b.subscribe(alice)
        early = c.a.subscribe(alice)
        try:
            live_token = await opened(live)
            early_token = await opened(early)
            for name in before:
                await c.a.rename(alice, workspace, name)
            for _ in range(5):
                event = await next_event(early)
                early_received.append(renamed_to(event))
                early_token = event.resume_token
            early.cancel()
            for _ in range(5):
                event = await next_event(live)
                live_received.append(renamed_to(event))
                live_token = event.resume_token

            await c.redis.kill()
            live_token = await drain_until_down(live, live_received, live_token)
        finally:
            live.cancel()
            early.cancel()
        assert live_received == before[: len(live_received)]
        # While Redis is down a new subscription fails fast instead of hanging.
        down = c.a.subscribe(alice, resume_token=live_token)
        try:
            error = await ended(down, within=10)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
        finally:
            down.cancel()

        await c.redis.start()  # same port, same directory: the AOF is replayed
        # Replica A publishes only once its own event log answers again (see the
        # next test for what happens to an update made while it does not).
        probe, _ = await open_when_back(c.a, alice, live_token)
        probe.cancel()
        for name in after:
            await c.a.rename(alice, workspace, name)

        await resume_after_restart(c.b, alice, live_token, live_received, before + after)
        await resume_after_restart(c.b, alice, early_token, early_received, before + after)


async def test_an_update_made_while_redis_is_down_fails_or_reaches_subscribers_after_restart(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path) as c:
        alice = await c.a.register()
        workspace = await personal_workspace(c.a, alice)
        stream = c.b.subscribe(alice)
        try:
            token = await opened(stream)
            await c.redis.kill()
            token = await drain_until_down(stream, [], token)
        finally:
            stream.cancel()
        during = [f"during {i}" for i in range(3)]

        async def publish_until_accepted() -> None:
            for name in during:
                while True:
                    try:
                        await c.a.rename(alice, workspace, name)
                        break
                    except grpc.aio.AioRpcError as caught:
                        code = caught.code()
                    assert code == grpc.StatusCode.UNAVAILABLE, code
                    await asyncio.sleep(0.2)

        publisher = asyncio.create_task(publish_until_accepted())
        try:
            await asyncio.sleep(1.5)
            await c.redis.start()
            await asyncio.wait_for(publisher, 20)
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        probe, _ = await open_when_back(c.a, alice, token)
        probe.cancel()
        await c.a.rename(alice, workspace, "after")

        received: list[str] = []
        await resume_after_restart(c.b, alice, token, received, [*during, "after"])
