"""The same server with Redis behind it: shared cache, events and limits, and
what happens when Redis goes away and comes back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cortex.context.v1 import context_service_pb2 as xpb
from cortex.context.v1 import context_service_pb2_grpc as xgrpc
from cortex.context.v1 import (
    conversation_pb2,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
)
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from support.clients import Client, authenticated_channel
from support.events import OwnRedis, own_redis
from support.inprocess import running_app


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    async with own_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def stubs(db_url: str, tmp_path: Path, redis_server: OwnRedis) -> AsyncIterator[Any]:
    async with running_app(
        tmp_path / "server", database_url=db_url, redis_url=redis_server.url, events_heartbeat=0.3
    ) as running:
        client = Client(running.address)
        account = await client.register()
        workspace = (await client.first_workspace(account)).name
        channel = authenticated_channel(running.address, account.access_token)
        try:
            yield (
                workspace,
                cgrpc.ConversationServiceStub(channel),
                xgrpc.ContextServiceStub(channel),
                memory_service_pb2_grpc.MemoryServiceStub(channel),
                event_service_pb2_grpc.EventServiceStub(channel),
            )
        finally:
            await channel.close()
            await client.close()


async def _converse(workspace: str, conversations: Any, context: Any, memories: Any) -> None:
    conversation = (
        await conversations.CreateConversation(
            cpb.CreateConversationRequest(
                parent=workspace, conversation=conversation_pb2.Conversation(title="t")
            )
        )
    ).conversation
    frames = [
        f
        async for f in conversations.SendMessage(
            cpb.SendMessageRequest(conversation=conversation.name, content="tea or coffee?"),
            timeout=30,
        )
    ]
    assert frames[-1].WhichOneof("frame") == "completion"
    request = xpb.GetContextWindowRequest(conversation=conversation.name, token_budget=500)
    first = await context.GetContextWindow(request)
    again = await context.GetContextWindow(request)
    assert first == again
    assert first.total_token_count <= 500
    await memories.CreateMemory(
        memory_service_pb2.CreateMemoryRequest(
            parent=workspace,
            memory=memory_pb2.Memory(
                content="prefers green tea", kind=memory_pb2.MEMORY_KIND_PREFERENCE
            ),
        )
    )
    found = await memories.SearchMemories(
        memory_service_pb2.SearchMemoriesRequest(parent=workspace, query="tea")
    )
    assert [m.memory.content for m in found.results][:1] == ["prefers green tea"]


async def test_conversations_context_and_memories_work_with_redis(stubs: Any) -> None:
    workspace, conversations, context, memories, events = stubs
    stream = events.SubscribeEvents(event_service_pb2.SubscribeEventsRequest())
    await stream.read()
    await _converse(workspace, conversations, context, memories)
    kinds = set()
    async with asyncio.timeout(10):
        while "reply_completed" not in kinds:
            frame = await stream.read()
            if frame.WhichOneof("frame") == "event":
                kinds.add(frame.event.WhichOneof("payload"))
    assert {"conversation_created", "message_created", "reply_started"} <= kinds
    stream.cancel()


async def test_the_service_keeps_answering_while_redis_is_down_and_uses_it_again(
    stubs: Any, redis_server: OwnRedis
) -> None:
    workspace, conversations, context, memories, events = stubs
    await redis_server.kill()
    await _converse(workspace, conversations, context, memories)  # database + in-process cache
    await redis_server.start()
    # Events of the outage were kept in the outbox and reach the log once Redis is back.
    stream = events.SubscribeEvents(event_service_pb2.SubscribeEventsRequest())
    await stream.read()
    await _converse(workspace, conversations, context, memories)
    async with asyncio.timeout(15):
        while True:
            frame = await stream.read()
            if frame.WhichOneof("frame") == "event" and frame.event.WhichOneof("payload") == (
                "reply_completed"
            ):
                break
    stream.cancel()
