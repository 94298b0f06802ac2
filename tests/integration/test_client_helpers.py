"""cortex_client's helpers against a real server: what the README promises a caller.

- a rejected access token is refreshed once, however many calls saw it, and the calls (a
  stream too) go through;
- an event subscription survives a server restart: every event arrives, none twice;
- a Status carried as a result reads like a raised one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc
import pytest
from cortex.context.v1 import conversation_pb2, conversation_service_pb2
from cortex.context.v1 import conversation_service_pb2_grpc as conversations
from cortex.events.v1 import event_pb2
from cortex.experts.v1 import expert_service_pb2, expert_service_pb2_grpc, task_pb2
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from cortex_client import Backoff, CortexClient, CortexError, EventSubscription, Tokens, watch_task
from cortex_client.backoff import retryable
from google.protobuf import struct_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from support.envoy import server_behind_envoy
from support.events import OwnRedis, own_redis
from support.inprocess import running_app
from support.mcp import free_port

from cortex_core.server import RunningServer

PASSWORD = "correct horse battery staple 42"
FAST = Backoff(initial=0.05, maximum=0.5, attempts=None)


async def _signed_up(client: CortexClient, name: str) -> str:
    """Registers a fresh account; returns its workspace."""
    await client.register(f"{name}-{time.time_ns()}@example.com", PASSWORD, name)
    stub = workspace_service_pb2_grpc.WorkspaceServiceStub(client.channel)
    listed = await stub.ListWorkspaces(workspace_service_pb2.ListWorkspacesRequest())
    return str(listed.workspaces[0].name)


def _echo_task(workspace: str) -> expert_service_pb2.CreateTaskRequest:
    text = struct_pb2.Value(string_value="hello")
    return expert_service_pb2.CreateTaskRequest(
        parent=workspace,
        task=task_pb2.Task(expert="experts/echo", input=struct_pb2.Struct(fields={"text": text})),
    )


async def test_a_rejected_access_token_is_refreshed_once_for_every_call_that_saw_it(
    tmp_path: Path,
) -> None:
    async with running_app(tmp_path) as running, CortexClient(running.address) as client:
        workspace = await _signed_up(client, "refresh")
        tasks = expert_service_pb2_grpc.ExpertServiceStub(client.channel)
        task = (await tasks.CreateTask(_echo_task(workspace))).task
        frames = [frame async for frame in watch_task(client.channel, task.name)]
        real = client.auth.tokens
        assert real is not None

        # The server refuses this token (TOKEN_INVALID); it does not look expired locally.
        forged = Tokens("not-a-token", real.refresh_token, time.time() + 3600, real.session)
        client.auth.set_tokens(forged)
        stub = workspace_service_pb2_grpc.WorkspaceServiceStub(client.channel)
        listed = await asyncio.gather(
            *[stub.ListWorkspaces(workspace_service_pb2.ListWorkspacesRequest()) for _ in range(8)]
        )
        assert [len(r.workspaces) for r in listed] == [1] * 8
        assert client.auth.refresh_count == 1

        # A stream refused at open is reopened once with the refreshed token.
        refreshed = client.auth.tokens
        assert refreshed is not None
        client.auth.set_tokens(Tokens("not-a-token", refreshed.refresh_token, time.time() + 3600))
        watch = expert_service_pb2_grpc.ExpertServiceStub(client.channel).WatchTask(
            expert_service_pb2.WatchTaskRequest(name=task.name)
        )
        replayed = [frame async for frame in watch]
        assert client.auth.refresh_count == 2
        assert replayed[-1].task.state == task_pb2.TASK_STATE_SUCCEEDED
        assert frames[-1].task.state == task_pb2.TASK_STATE_SUCCEEDED


async def test_a_refresh_token_presented_twice_is_refused_and_raised_typed(tmp_path: Path) -> None:
    async with running_app(tmp_path) as running, CortexClient(running.address) as client:
        await _signed_up(client, "reuse")
        stale = client.auth.tokens
        assert stale is not None
        await client.auth.refresh()
        client.auth.set_tokens(stale)  # a copy that missed the rotation

        with pytest.raises(CortexError) as raised:
            await client.auth.refresh()

        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
        assert raised.value.reason == "REFRESH_TOKEN_REUSED"


def _restartable(
    tmp_path: Path, redis: OwnRedis
) -> Callable[[], AbstractAsyncContextManager[RunningServer]]:
    """The same server (address, data, secret, Redis event log) each time it is started."""
    address = f"127.0.0.1:{free_port()}"

    def start() -> AbstractAsyncContextManager[RunningServer]:
        return running_app(
            tmp_path / "server", grpc_address=address, redis_url=redis.url, events_heartbeat=0.3
        )

    return start


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    async with own_redis(tmp_path / "redis") as server:
        yield server


async def test_an_event_subscription_survives_a_server_restart_with_every_event_once(
    tmp_path: Path, redis: OwnRedis
) -> None:
    server = _restartable(tmp_path, redis)
    seen: asyncio.Queue[event_pb2.Event] = asyncio.Queue()
    created: list[str] = []

    async def create(client: CortexClient, workspace: str, title: str) -> None:
        stub = conversations.ConversationServiceStub(client.channel)
        await stub.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                parent=workspace, conversation=conversation_pb2.Conversation(title=title)
            ),
            wait_for_ready=True,
        )
        created.append(title)

    first = server()
    running = await first.__aenter__()
    client = CortexClient(running.address)
    try:
        workspace = await _signed_up(client, "events")
        subscription = EventSubscription(
            client.channel,
            workspaces=[workspace],
            event_types=[event_pb2.EVENT_TYPE_CONVERSATION_CREATED],
            backoff=FAST,
        )

        async def consume() -> None:
            async for event in subscription:
                await seen.put(event)

        consumer = asyncio.create_task(consume())
        while seen.empty():  # the stream starts live: create until one arrives
            await create(client, workspace, f"before-{len(created)}")
            await asyncio.sleep(0.1)
        await first.__aexit__(None, None, None)  # drains: the stream is told to reconnect
        first = None
        async with server():
            await create(client, workspace, "after-restart")
            titles: list[str] = []
            while "after-restart" not in titles:
                event = await asyncio.wait_for(seen.get(), timeout=20)
                titles.append(event.conversation_created.conversation.title)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    finally:
        await client.close()
        if first is not None:
            await first.__aexit__(None, None, None)

    # Every event after the first one seen arrives once, in order, across the restart.
    start = created.index(titles[0])
    assert titles == created[start:]
    assert subscription.reconnects >= 1


async def _next_or_failure(seen: asyncio.Queue[str], consumer: asyncio.Task[None]) -> str:
    """The next title seen, or the consumer's own failure (raised) if it ended first."""
    getter = asyncio.ensure_future(seen.get())
    done, _ = await asyncio.wait({getter, consumer}, timeout=20, return_when="FIRST_COMPLETED")
    if getter not in done:
        getter.cancel()
        consumer.result()  # raises what ended the subscription
        pytest.fail("no event within 20 s")
    return getter.result()


async def test_a_subscription_through_envoy_resumes_after_its_server_is_killed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind Envoy a SIGKILLed server's stream reaches the client as INTERNAL (Envoy resets
    it: "RST_STREAM error code 2"), not UNAVAILABLE; the subscription resumes all the same
    once a server is back on the same port, and the event created then arrives."""
    caplog.set_level(logging.INFO, logger="cortex_client")
    seen: asyncio.Queue[str] = asyncio.Queue()
    env = {"CORTEX_EVENTS_HEARTBEAT": "0.3"}
    with server_behind_envoy(tmp_path, env) as behind:
        client = CortexClient(behind.envoy.listener)
        workspace = await _signed_up(client, "envoy")
        direct = CortexClient(behind.address, tokens=client.auth.tokens)  # the same sign-in
        try:

            async def create(title: str) -> None:
                stub = conversations.ConversationServiceStub(direct.channel)
                await stub.CreateConversation(
                    conversation_service_pb2.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title=title)
                    ),
                    wait_for_ready=True,
                )

            subscription = EventSubscription(
                client.channel,
                workspaces=[workspace],
                event_types=[event_pb2.EVENT_TYPE_CONVERSATION_CREATED],
                backoff=FAST,
            )

            async def consume() -> None:
                async for event in subscription:
                    await seen.put(event.conversation_created.conversation.title)

            consumer = asyncio.create_task(consume())
            while seen.empty():  # the stream starts live: create until one arrives
                await create("before")
                await asyncio.sleep(0.1)
            await asyncio.to_thread(behind.kill_and_restart)
            await create("after-kill")
            titles: list[str] = []
            while "after-kill" not in titles:
                titles.append(await _next_or_failure(seen, consumer))
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
        finally:
            await client.close()
            await direct.close()

    assert subscription.reconnects >= 1
    ended = [r.getMessage() for r in caplog.records if "event stream ended" in r.getMessage()]
    assert any("INTERNAL" in message for message in ended), ended


async def test_a_subscription_continues_across_a_restart_of_a_server_without_redis(
    tmp_path: Path,
) -> None:
    # Without Redis the event log is the server's own event store (SqlEventLog, in its
    # database), so a restarted server continues its sequences: no ReplayUnavailable, and
    # the event created after the restart arrives once.
    address = f"127.0.0.1:{free_port()}"
    gaps: list[int] = []
    first = running_app(tmp_path, grpc_address=address, events_heartbeat=0.3)
    running = await first.__aenter__()
    client = CortexClient(running.address)
    try:
        workspace = await _signed_up(client, "memory")
        stub = conversations.ConversationServiceStub(client.channel)

        async def create(title: str) -> None:
            await stub.CreateConversation(
                conversation_service_pb2.CreateConversationRequest(
                    parent=workspace, conversation=conversation_pb2.Conversation(title=title)
                ),
                wait_for_ready=True,
            )

        subscription = EventSubscription(
            client.channel,
            workspaces=[workspace],
            event_types=[event_pb2.EVENT_TYPE_CONVERSATION_CREATED],
            backoff=FAST,
            on_gap=lambda gap: gaps.append(gap.oldest_available_sequence),
        )
        events = aiter(subscription)
        waiting = asyncio.ensure_future(anext(events))
        for _ in range(3):  # the stream starts live: one of these three is seen, or more
            await create("before")
            await asyncio.wait([waiting], timeout=0.2)
        before = await waiting
        await first.__aexit__(None, None, None)
        first = None
        async with running_app(tmp_path, grpc_address=address, events_heartbeat=0.3):
            following = asyncio.ensure_future(anext(events))
            await create("after-restart")
            titles = []
            while "after-restart" not in titles:
                event = await asyncio.wait_for(following, timeout=20)
                titles.append(event.conversation_created.conversation.title)
                following = asyncio.ensure_future(anext(events))
            following.cancel()
            await events.aclose()  # type: ignore[attr-defined]
    finally:
        await client.close()
        if first is not None:
            await first.__aexit__(None, None, None)

    assert before.conversation_created.conversation.title == "before"
    assert gaps == []
    assert titles[-1] == "after-restart"


def test_a_status_carried_as_a_result_reads_like_a_raised_error() -> None:
    info = error_details_pb2.ErrorInfo(reason="TOOL_TIMEOUT", domain="cortex")
    status = status_pb2.Status(code=code_pb2.DEADLINE_EXCEEDED, message="too slow")
    status.details.add().Pack(info)

    error = CortexError.from_status(status)

    assert (error.code, error.reason, error.message) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "TOOL_TIMEOUT",
        "too slow",
    )
    assert error.describe() == "DEADLINE_EXCEEDED (TOOL_TIMEOUT): too slow"


@pytest.mark.parametrize(
    ("code", "reason", "resumed"),
    [
        # No ErrorInfo: the transport's (what grpcio reports when Envoy resets a stream
        # whose replica died is INTERNAL "Received RST_STREAM with error code 2").
        (grpc.StatusCode.INTERNAL, "", True),
        (grpc.StatusCode.UNAVAILABLE, "", True),
        (grpc.StatusCode.UNKNOWN, "", True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "", False),  # the caller's own: no attempt deadline
        (grpc.StatusCode.INVALID_ARGUMENT, "", False),
        # An ErrorInfo reason: the server's own verdict.
        (grpc.StatusCode.UNAVAILABLE, "SERVER_SHUTTING_DOWN", True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW", True),
        (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED", True),
        (grpc.StatusCode.INTERNAL, "INTERNAL", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESUME_TOKEN", False),
        (grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED", False),
        (grpc.StatusCode.NOT_FOUND, "TASK_NOT_FOUND", False),
        (grpc.StatusCode.UNAUTHENTICATED, "SESSION_REVOKED", False),
    ],
)
def test_streams_resume_after_transport_failures_and_only_the_servers_retryable_reasons(
    code: grpc.StatusCode, reason: str, resumed: bool
) -> None:
    assert retryable(CortexError(code, "failed", reason=reason)) is resumed
