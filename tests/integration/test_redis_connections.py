"""One bounded Redis connection pool per process, shared by cache, events and limits.

A burst of calls that all touch Redis (context windows through the cache, logins
through the throttle, new conversations through the event log to a subscriber) on
a server given ``redis_max_connections=N`` never opens more than N connections to
Redis, and every call still succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from cortex.auth.v1 import auth_service_pb2 as auth_pb
from cortex.context.v1 import context_service_pb2 as xpb
from cortex.context.v1 import context_service_pb2_grpc as xgrpc
from cortex.context.v1 import conversation_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from support.clients import Client, authenticated_channel
from support.events import OwnRedis, own_redis
from support.inprocess import running_app

MAX_CONNECTIONS = 4
BURST = 120
CREATED = 10


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    async with own_redis(tmp_path / "redis") as server:
        yield server


async def _connections(url: str) -> int:
    """Clients connected to the server, not counting the one asking."""
    probe = redis.Redis.from_url(url)
    try:
        return len(await probe.client_list()) - 1
    finally:
        await probe.aclose()


async def test_a_burst_of_calls_uses_at_most_the_configured_redis_connections(
    tmp_path: Path, redis_server: OwnRedis
) -> None:
    async with running_app(
        tmp_path / "server",
        redis_url=redis_server.url,
        redis_max_connections=MAX_CONNECTIONS,
        redis_timeout=5.0,
    ) as running:
        client = Client(running.address)
        account = await client.register()
        workspace = (await client.first_workspace(account)).name
        channel = authenticated_channel(running.address, account.access_token)
        try:
            conversation = (
                await cgrpc.ConversationServiceStub(channel).CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title="t")
                    )
                )
            ).conversation.name
            stream = event_service_pb2_grpc.EventServiceStub(channel).SubscribeEvents(
                event_service_pb2.SubscribeEventsRequest()
            )
            await stream.read()  # subscribed
            context = xgrpc.ContextServiceStub(channel)
            windows = [
                context.GetContextWindow(
                    xpb.GetContextWindowRequest(conversation=conversation, token_budget=100 + i),
                    timeout=60,
                )
                for i in range(BURST)
            ]
            logins = [
                client.auth.Login(
                    auth_pb.LoginRequest(email=account.email, password=account.password),
                    timeout=60,
                )
                for _ in range(8)
            ]
            created = [
                cgrpc.ConversationServiceStub(channel).CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title=f"b{i}")
                    ),
                    timeout=60,
                )
                for i in range(CREATED)
            ]
            results = await asyncio.gather(*windows, *logins, *created)

            assert len(results) == BURST + 8 + CREATED
            assert all(r.access_token for r in results[BURST : BURST + 8])
            names = {r.conversation.name for r in results[BURST + 8 :]}
            async with asyncio.timeout(30):
                while names:
                    frame = await stream.read()
                    if frame.WhichOneof("frame") == "event":
                        names.discard(frame.event.conversation_created.conversation.name)
            stream.cancel()
            opened = await _connections(redis_server.url)
            assert 0 < opened <= MAX_CONNECTIONS
        finally:
            await channel.close()
            await client.close()
