"""No committed change without exactly one event, through SIGKILLs.

Writers create memories, send messages and rename the workspace while
subscribers follow it; a server process is killed with SIGKILL at random moments
and started again on the same port (and data). Subscribers resume from their last
token, on any replica. At the end every change the API shows (read back from the
database through the API) has exactly one event for every subscriber, each
stream's sequences run on with no gap and no repeat, messages arrive in their
conversation's order, and the workspace's last rename event names its final name.

Backends: one server on SQLite (the event store is the log), and two replicas
sharing PostgreSQL and a private Redis (the store is the outbox, relayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import conversation_pb2, memory_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.context.v1 import memory_service_pb2 as mpb
from cortex.context.v1 import memory_service_pb2_grpc as mgrpc
from cortex.events.v1 import event_pb2
from support.clients import Account
from support.databases import postgres_database
from support.events import JWT_SECRET, EventsClient, free_port, own_redis
from support.servers import ServerProcess, cortex_server

ROUNDS = 2  # each restart costs a server start (seconds on a loaded machine)
WRITERS_PER_KIND = 2
SUBSCRIBERS = 3
EVENT_TYPE = event_pb2.EventType


@dataclass
class Node:
    """One server slot: a fixed port and data dir, so a restart is the same server."""

    directory: Path
    env: dict[str, str]
    server: ServerProcess | None = None
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self) -> None:
        self._stack = contextlib.ExitStack()
        self.server = self._stack.enter_context(cortex_server(self.directory, self.env))

    def kill(self) -> None:
        assert self.server is not None
        self.server.process.kill()  # SIGKILL: no drain, no cleanup
        self.server.process.wait()
        self._stack.close()

    def stop(self) -> None:
        self._stack.close()


@dataclass
class Run:
    nodes: list[Node]
    addresses: list[str]
    clients: list[EventsClient]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    renamed: list[str] = field(default_factory=list)  # acknowledged renames
    errors: Counter[str] = field(default_factory=Counter)


@contextlib.contextmanager
def _nodes(tmp_path: Path, count: int, env: dict[str, str]) -> Iterator[list[Node]]:
    nodes = []
    try:
        for n in range(count):
            port = free_port()
            node = Node(
                tmp_path / f"node-{n}",
                {
                    "CORTEX_GRPC_ADDRESS": f"127.0.0.1:{port}",
                    "CORTEX_JWT_SECRET": JWT_SECRET,
                    "CORTEX_ACCESS_LOG": "false",
                    "CORTEX_EVENTS_HEARTBEAT": "0.5",
                    "CORTEX_LOCAL_LLM_DELAY": "0.01",
                    "CORTEX_SHUTDOWN_GRACE": "2",
                    **env,
                },
            )
            node.start()
            nodes.append(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@contextlib.asynccontextmanager
async def backend(kind: str, tmp_path: Path) -> AsyncIterator[list[Node]]:
    if kind == "sqlite":
        with _nodes(tmp_path, 1, {}) as nodes:
            yield nodes
        return
    async with postgres_database() as url, own_redis(tmp_path / "redis") as redis_server:
        env = {"CORTEX_DATABASE_URL": url, "CORTEX_REDIS_URL": redis_server.url}
        with _nodes(tmp_path, 2, env) as nodes:
            yield nodes


def _retry(run: Run, error: grpc.aio.AioRpcError) -> None:
    """A write cut by a kill is retried (its outcome is unknown); anything else fails."""
    if not _retryable(error):
        raise error
    run.errors[error.code().name] += 1


def _retryable(error: grpc.aio.AioRpcError) -> bool:
    return error.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,  # a connection cut mid-response
        grpc.StatusCode.FAILED_PRECONDITION,  # a dead process's reply lease
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    )


async def _renamer(run: Run, account: Account, workspace: str, n: int) -> None:
    client = run.clients[n % len(run.clients)]
    i = 0
    while not run.stop.is_set():
        name = f"w{n}-{i}"
        i += 1
        try:
            await client.rename(account, workspace, name)
            run.renamed.append(name)
        except grpc.aio.AioRpcError as error:
            _retry(run, error)
            await asyncio.sleep(0.2)  # the server may be down for seconds


async def _rememberer(run: Run, account: Account, workspace: str, n: int) -> None:
    stub = mgrpc.MemoryServiceStub(run.clients[(n + 1) % len(run.clients)].channel)
    i = 0
    while not run.stop.is_set():
        i += 1
        try:
            await stub.CreateMemory(
                mpb.CreateMemoryRequest(
                    parent=workspace,
                    memory=memory_pb2.Memory(
                        content=f"memory {n}-{i}", kind=memory_pb2.MEMORY_KIND_FACT
                    ),
                ),
                metadata=account.metadata(),
                timeout=5,
            )
        except grpc.aio.AioRpcError as error:
            _retry(run, error)
            await asyncio.sleep(0.2)  # the server may be down for seconds


async def _talker(run: Run, account: Account, workspace: str, n: int) -> None:
    stub = cgrpc.ConversationServiceStub(run.clients[n % len(run.clients)].channel)
    conversation = ""
    i = 0
    while not run.stop.is_set():
        i += 1
        try:
            if not conversation:  # a new one after a failure: the old lease may be a dead one's
                created = await stub.CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title=f"c{n}")
                    ),
                    metadata=account.metadata(),
                    timeout=5,
                )
                conversation = created.conversation.name
            async for _ in stub.SendMessage(
                cpb.SendMessageRequest(conversation=conversation, content=f"hello {n}-{i}"),
                metadata=account.metadata(),
                timeout=10,
            ):
                pass
        except grpc.aio.AioRpcError as error:
            _retry(run, error)
            conversation = ""
            await asyncio.sleep(0.2)  # the server may be down for seconds


@dataclass
class Follower:
    """A subscriber that resumes from its last token (on the next replica) when cut."""

    events: list[event_pb2.Event] = field(default_factory=list)
    token: str = ""
    resumes: int = 0
    opened: asyncio.Event = field(default_factory=asyncio.Event)


async def _follow(
    run: Run, account: Account, workspace: str, follower: Follower, n: int, final: str
) -> None:
    turn = n
    while True:
        client = run.clients[turn % len(run.clients)]
        turn += 1
        stream = client.subscribe(account, workspaces=[workspace], resume_token=follower.token)
        try:
            while True:
                async with asyncio.timeout(10):
                    frame = await stream.read()
                assert frame is not grpc.aio.EOF, "the stream ended without an error"
                kind = frame.WhichOneof("frame")
                assert kind != "replay_unavailable", frame
                if kind == "heartbeat":
                    follower.token = frame.heartbeat.resume_token
                    follower.opened.set()
                    continue
                event = frame.event
                follower.events.append(event)
                follower.token = event.resume_token
                if (
                    event.type == EVENT_TYPE.EVENT_TYPE_WORKSPACE_UPDATED
                    and event.workspace_updated.workspace.display_name == final
                ):
                    return
        except grpc.aio.AioRpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise
            follower.resumes += 1
            await asyncio.sleep(0.1)
        except TimeoutError:
            follower.resumes += 1  # a connection to a killed process that never says so
        finally:
            stream.cancel()


async def _pages(call: Any, request: Any, field_name: str, account: Account) -> list[Any]:
    items: list[Any] = []
    while True:
        response = await call(request, metadata=account.metadata(), timeout=10)
        items.extend(getattr(response, field_name))
        if not response.next_page_token:
            return items
        request.page_token = response.next_page_token


async def _committed(
    run: Run, account: Account, workspace: str
) -> tuple[set[str], set[str], dict[str, list[str]], str]:
    """What the API shows now: memory names, conversation names, message names per
    conversation in order, and the workspace's display name."""
    channel = run.clients[0].channel
    memories = await _pages(
        mgrpc.MemoryServiceStub(channel).ListMemories,
        mpb.ListMemoriesRequest(parent=workspace, page_size=100),
        "memories",
        account,
    )
    conversations_stub = cgrpc.ConversationServiceStub(channel)
    conversations = await _pages(
        conversations_stub.ListConversations,
        cpb.ListConversationsRequest(parent=workspace, page_size=100),
        "conversations",
        account,
    )
    messages = {}
    for conversation in conversations:
        found = await _pages(
            conversations_stub.ListMessages,
            cpb.ListMessagesRequest(parent=conversation.name, page_size=100),
            "messages",
            account,
        )
        messages[conversation.name] = [m.name for m in found]
    current = await run.clients[0].first_workspace(account)
    return (
        {m.name for m in memories},
        {c.name for c in conversations},
        messages,
        str(current.display_name),
    )


def _check(
    follower: Follower,
    renamed: list[str],
    memories: set[str],
    conversations: set[str],
    messages: dict[str, list[str]],
    final: str,
) -> None:
    events = follower.events
    ids = Counter(e.id for e in events)
    assert not [i for i, count in ids.items() if count > 1], "an event was delivered twice"
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), (
        "a gap or a repeat in the workspace's sequences"
    )
    by_type: dict[int, list[event_pb2.Event]] = defaultdict(list)
    for event in events:
        by_type[event.type].append(event)
    seen_memories = Counter(
        e.memory_created.memory.name for e in by_type[EVENT_TYPE.EVENT_TYPE_MEMORY_CREATED]
    )
    assert set(seen_memories) == memories, "a committed memory without event, or the reverse"
    assert set(seen_memories.values()) <= {1}
    seen_conversations = Counter(
        e.conversation_created.conversation.name
        for e in by_type[EVENT_TYPE.EVENT_TYPE_CONVERSATION_CREATED]
    )
    assert set(seen_conversations) == conversations
    assert set(seen_conversations.values()) <= {1}
    seen_messages: dict[str, list[str]] = defaultdict(list)
    for event in by_type[EVENT_TYPE.EVENT_TYPE_MESSAGE_CREATED]:
        name = event.message_created.message.name
        seen_messages[name.rsplit("/messages/", 1)[0]].append(name)
    stored = {c: names for c, names in messages.items() if names}
    assert dict(seen_messages) == stored, "messages: not exactly once, or not in their order"
    names = [
        e.workspace_updated.workspace.display_name
        for e in by_type[EVENT_TYPE.EVENT_TYPE_WORKSPACE_UPDATED]
    ]
    assert len(names) == len(set(names)), "a rename was delivered twice"
    assert set(renamed) <= set(names), "an acknowledged rename has no event"
    assert names[-1] == final


@pytest.mark.parametrize("kind", ["sqlite", "replicas"])
async def test_every_committed_change_has_one_event_in_order_through_sigkills(
    kind: str, tmp_path: Path
) -> None:
    rng = random.Random()
    async with backend(kind, tmp_path) as nodes:
        run = Run(nodes, [], [])
        for node in nodes:
            assert node.server is not None
            run.addresses.append(node.server.address)
            run.clients.append(EventsClient(node.server.address))
        try:
            account = await run.clients[0].register()
            workspace = str((await run.clients[0].first_workspace(account)).name)
            final = f"final-{uuid.uuid4().hex[:6]}"
            followers = [Follower() for _ in range(SUBSCRIBERS)]
            following = [
                asyncio.create_task(_follow(run, account, workspace, f, n, final))
                for n, f in enumerate(followers)
            ]
            async with asyncio.timeout(15):
                for follower in followers:
                    await follower.opened.wait()
            writers = [
                asyncio.create_task(write(run, account, workspace, n))
                for write in (_renamer, _rememberer, _talker)
                for n in range(WRITERS_PER_KIND)
            ]
            for round_ in range(ROUNDS):
                await asyncio.sleep(rng.uniform(0.4, 1.5))
                victim = nodes[round_ % len(nodes)]  # on replicas, each one once
                await asyncio.to_thread(victim.kill)
                await asyncio.to_thread(victim.start)
            await asyncio.sleep(0.5)  # some writes after the last restart
            run.stop.set()
            await asyncio.gather(*writers)
            # The marker: once a follower has it, it has every earlier event of the stream.
            async with asyncio.timeout(20):
                while True:
                    try:
                        await run.clients[0].rename(account, workspace, final)
                        break
                    except grpc.aio.AioRpcError as error:
                        _retry(run, error)
                        await asyncio.sleep(0.2)
            async with asyncio.timeout(30):
                await asyncio.gather(*following)
            memories, conversations, messages, display_name = await _committed(
                run, account, workspace
            )
            assert display_name == final
            assert memories
            assert conversations
            assert any(messages.values())
            assert run.renamed
            for follower in followers:
                _check(follower, run.renamed, memories, conversations, messages, final)
            assert sum(f.resumes for f in followers) > 0  # the kills did cut them
        finally:
            for client in run.clients:
                await client.close()
