"""Background work survives a PostgreSQL outage under a running ``cortex-core serve``.

The database is a private server, stopped and started again while Cortex runs:
each supervised loop shows in health that it is backing off, comes back by
itself, and summary jobs queued after the outage are written. Meanwhile health
reports the outage and calls get a retryable UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import context_service_pb2 as xpb
from cortex.context.v1 import context_service_pb2_grpc as xgrpc
from cortex.context.v1 import context_window_pb2 as wpb
from cortex.context.v1 import conversation_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.clients import Client, authenticated_channel
from support.postgres import private_postgres
from support.rpc import details
from support.servers import cortex_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
LOOPS = ("tasks", "memory-sweeper", "event-relay", "database-watch")


async def _status(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return int(response.status)


async def _until(check: Callable[[], object], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not await check():  # type: ignore[misc]
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.2)


async def test_summaries_resume_after_postgresql_is_stopped_and_started(tmp_path: Path) -> None:
    with private_postgres() as postgres:
        env = {"CORTEX_DATABASE_URL": postgres.url, "CORTEX_MEMORY_SWEEP_INTERVAL": "0.5"}
        with cortex_server(tmp_path, env) as server:
            client = Client(server.address)
            account = await client.register()
            workspace = (await client.first_workspace(account)).name
            channel = authenticated_channel(server.address, account.access_token)
            conversations = cgrpc.ConversationServiceStub(channel)
            context = xgrpc.ContextServiceStub(channel)
            try:
                conversation = (
                    await conversations.CreateConversation(
                        cpb.CreateConversationRequest(
                            parent=workspace, conversation=conversation_pb2.Conversation(title="t")
                        )
                    )
                ).conversation.name
                request = cpb.SendMessageRequest(
                    conversation=conversation, content="remember the blue door"
                )
                _ = [frame async for frame in conversations.SendMessage(request, timeout=30)]
                for loop in LOOPS:
                    assert await _status(channel, f"cortex.background.{loop}") == SERVING

                postgres.stop()

                async def backing_off() -> bool:
                    statuses = [
                        await _status(channel, f"cortex.background.{loop}")
                        for loop in ("tasks", "memory-sweeper")
                    ]
                    return statuses == [NOT_SERVING, NOT_SERVING]

                await _until(backing_off)
                assert await _status(channel, "cortex.background") == NOT_SERVING

                async def reported_down() -> bool:  # a real outage does turn health off
                    return await _status(channel, "") == NOT_SERVING

                await _until(reported_down)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await context.GetContextWindow(
                        xpb.GetContextWindowRequest(conversation=conversation)
                    )
                assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
                assert details(refused.value)["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"
                assert details(refused.value)["RetryInfo"].retry_delay.seconds > 0

                postgres.start()

                async def recovered() -> bool:
                    statuses = [await _status(channel, s) for s in ("cortex.background", "")]
                    return statuses == [SERVING, SERVING]

                await _until(recovered)
                for loop in LOOPS:
                    assert await _status(channel, f"cortex.background.{loop}") == SERVING

                # A window too small for the history queues a summary job.
                await context.GetContextWindow(
                    xpb.GetContextWindowRequest(conversation=conversation, token_budget=5)
                )

                budgets = iter(range(5000, 6000))

                async def summarized() -> bool:
                    # A new budget each time: a window cached while the summary was
                    # being written can outlive its invalidation (a cache-aside race
                    # outside this test's concern), and would hide the summary.
                    window = await context.GetContextWindow(
                        xpb.GetContextWindowRequest(
                            conversation=conversation, token_budget=next(budgets)
                        )
                    )
                    return any(i.kind == wpb.CONTEXT_ITEM_KIND_SUMMARY for i in window.items)

                await _until(summarized)

                # Events still flow from a commit to a subscriber.
                events = event_service_pb2_grpc.EventServiceStub(channel)
                stream = events.SubscribeEvents(event_service_pb2.SubscribeEventsRequest())
                await stream.read()  # opened
                await conversations.CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title="after")
                    )
                )
                async with asyncio.timeout(30):
                    while True:
                        frame = await stream.read()
                        kind = frame.event.WhichOneof("payload") if frame.HasField("event") else ""
                        if kind == "conversation_created":
                            break
                stream.cancel()
            finally:
                await channel.close()
                await client.close()
            logs = server.logs()
    # Summary jobs run on the task runner: its dispatch loop is the one that backs off.
    assert "background loop tasks failed" in logs
    assert "background loop tasks recovered" in logs
