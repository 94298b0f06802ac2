"""Context-window assembly for a conversation of 10,000 messages, cold and cached.

The server runs in this process (uvloop, SQLite by default, or the database in
``--database-url``); 10,000 messages are written straight through the storage
layer, then ``ContextService/GetContextWindow`` is called over gRPC:

* cold: every call uses a token budget not asked for before (a cache miss:
  the window is assembled from the database);
* cached: the same call repeated (served from the window cache).

    python -m bench.context [--messages 10000] [--calls 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.context.v1 import (
    context_service_pb2,
    context_service_pb2_grpc,
    conversation_pb2,
    conversation_service_pb2,
    conversation_service_pb2_grpc,
)
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc

from bench.load import percentile
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.token_counter import EstimatedTokenCounter
from cortex_core.bootstrap import bootstrap
from cortex_core.domain.conversations import Message, MessageRole
from cortex_core.domain.tasks import TaskKind
from cortex_core.server import start
from cortex_core.settings import Settings


async def _fill(url: str, workspace_id: str, conversation_id: str, count: int) -> float:
    counter = EstimatedTokenCounter()
    database = SqlDatabase.from_url(url)
    started = time.perf_counter()
    try:
        for batch in range(0, count, 1000):
            async with database.unit_of_work() as uow:
                for n in range(batch, min(batch + 1000, count)):
                    text = f"message {n}: " + "words about the project plan " * (1 + n % 7)
                    await uow.conversations.append_message(
                        Message(
                            id=uuid.uuid4().hex,
                            conversation_id=conversation_id,
                            workspace_id=workspace_id,
                            position=0,
                            role=MessageRole.USER if n % 2 == 0 else MessageRole.ASSISTANT,
                            content=text,
                            token_count=counter.count(text),
                            create_time=datetime.now(UTC),
                        )
                    )
                await uow.commit()
    finally:
        await database.dispose()
    return time.perf_counter() - started


async def _settle(url: str) -> None:
    database = SqlDatabase.from_url(url)
    try:
        for _ in range(600):
            async with database.unit_of_work() as uow:
                if not await uow.tasks.count_open(TaskKind.SUMMARY):
                    return
            await asyncio.sleep(0.1)
    finally:
        await database.dispose()


async def run(messages: int, calls: int, database_url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'cortex.db'}"
        settings = Settings(
            grpc_address="127.0.0.1:0", data_dir=Path(tmp), database_url=url, access_log=False
        )
        running = await start(bootstrap(settings))
        try:
            async with grpc.aio.insecure_channel(running.address) as channel:
                auth = auth_service_pb2_grpc.AuthServiceStub(channel)
                account = await auth.Register(
                    auth_service_pb2.RegisterRequest(
                        email=f"ctx-{uuid.uuid4().hex[:8]}@example.com",
                        password="correct horse battery staple 42",
                        display_name="Bench",
                    )
                )
                metadata = (("authorization", f"Bearer {account.access_token}"),)
                workspaces = workspace_service_pb2_grpc.WorkspaceServiceStub(channel)
                listed = await workspaces.ListWorkspaces(
                    workspace_service_pb2.ListWorkspacesRequest(), metadata=metadata
                )
                workspace = listed.workspaces[0].name
                conversations = conversation_service_pb2_grpc.ConversationServiceStub(channel)
                conversation = (
                    await conversations.CreateConversation(
                        conversation_service_pb2.CreateConversationRequest(
                            parent=workspace,
                            conversation=conversation_pb2.Conversation(
                                title="long", system_prompt="You are a planner."
                            ),
                        ),
                        metadata=metadata,
                    )
                ).conversation
                fill = await _fill(
                    url, workspace.split("/")[1], conversation.name.rsplit("/", 1)[1], messages
                )
                context = context_service_pb2_grpc.ContextServiceStub(channel)

                async def window(budget: int) -> float:
                    begin = time.perf_counter()
                    await context.GetContextWindow(
                        context_service_pb2.GetContextWindowRequest(
                            conversation=conversation.name, token_budget=budget
                        ),
                        metadata=metadata,
                        timeout=60,
                    )
                    return time.perf_counter() - begin

                # The first windows overflow and queue summary jobs; let the
                # background worker catch up so it does not run during the timing.
                await window(3999)
                await _settle(url)
                cold = [await window(4000 + n) for n in range(calls)]
                await window(8000)
                cached = [await window(8000) for _ in range(calls * 10)]
        finally:
            await running.drain()
    print(f"Context window over a conversation of {messages} messages ({fill:.1f} s to store them)")
    for label, samples in (("cold (assembled)", cold), ("cached", cached)):
        print(
            f"  {label:<18} n={len(samples):<4} p50 {statistics.median(samples) * 1000:8.2f} ms"
            f"   p99 {percentile(samples, 99) * 1000:8.2f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    uvloop.run(run(args.messages, args.calls, args.database_url))


if __name__ == "__main__":
    main()
