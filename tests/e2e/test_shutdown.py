"""SIGTERM and admission as users see them: a real ``cortex-core serve`` process.

The shutdown test puts every kind of call in flight at once (a burst of unary calls,
replies paced by ``CORTEX_LOCAL_LLM_DELAY``, event streams),
sends SIGTERM, and then resumes every event stream on a second server that shares
the database and a private Redis, so "no gap" is checked across the restart.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import conversation_pb2, conversation_service_pb2, message_pb2
from cortex.context.v1 import conversation_service_pb2_grpc as conversation_grpc
from cortex.events.v1 import event_pb2, event_service_pb2
from cortex.events.v1 import event_service_pb2_grpc as event_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.clients import Account
from support.events import (
    JWT_SECRET,
    EventsClient,
    opened,
    own_redis,
    read_frame,
    shared_database,
)
from support.rpc import details
from support.servers import cortex_server

GRACE = 60.0
CONTEXT_ERROR = "different Context"
RESUME_HEADER = "cortex-resume-token"
# 40 words: the local development provider quotes them back, one word per delay.
LONG_MESSAGE = " ".join(f"word{i}" for i in range(40))


def _env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "CORTEX_DATABASE_URL": database_url,
        "CORTEX_REDIS_URL": redis_url,
        "CORTEX_JWT_SECRET": JWT_SECRET,
        "CORTEX_EVENTS_HEARTBEAT": "0.5",
        "CORTEX_SHUTDOWN_GRACE": str(GRACE),
        **extra,
    }


async def _conversation(channel: grpc.aio.Channel, account: Account, workspace: str) -> str:
    stub = conversation_grpc.ConversationServiceStub(channel)
    response = await stub.CreateConversation(
        conversation_service_pb2.CreateConversationRequest(
            parent=workspace, conversation=conversation_pb2.Conversation(title="drain")
        ),
        metadata=account.metadata(),
        timeout=10,
    )
    return str(response.conversation.name)


async def _reply(stream: Any, first_delta: asyncio.Event) -> list[Any]:
    """Every frame of a reply; sets ``first_delta`` once text is flowing."""
    frames = []
    async for frame in stream:
        frames.append(frame)
        if frame.WhichOneof("frame") == "delta":
            first_delta.set()
    return frames


async def _events_until_error(stream: Any) -> tuple[list[Any], grpc.aio.AioRpcError]:
    frames = []
    try:
        while True:
            frame = await read_frame(stream, within=30)
            frames.append(frame)
    except grpc.aio.AioRpcError as error:
        return frames, error


def _token_of(frame: Any) -> str:
    if frame.WhichOneof("frame") == "event":
        return str(frame.event.resume_token)
    return str(frame.heartbeat.resume_token)


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str:
    return next((str(v) for k, v in error.trailing_metadata() or () if k == key), "")


async def test_sigterm_lets_calls_finish_tells_streams_where_to_resume_and_exits_early(
    tmp_path: Path,
) -> None:
    async with (
        shared_database(tmp_path) as database_url,
        own_redis(tmp_path / "redis") as redis_server,
    ):
        env = _env(database_url, redis_url=redis_server.url, CORTEX_LOCAL_LLM_DELAY="0.05")
        with cortex_server(tmp_path / "first", env) as first:
            client = EventsClient(first.address)
            owner = await client.register()
            workspace = str((await client.first_workspace(owner)).name)

            subscriptions = [client.subscribe(owner, workspaces=[workspace]) for _ in range(20)]
            positions = [await opened(stream) for stream in subscriptions]
            conversations = [
                await _conversation(client.channel, owner, workspace) for _ in range(4)
            ]

            replies_stub = conversation_grpc.ConversationServiceStub(client.channel)
            flowing = [asyncio.Event() for _ in conversations]
            replies = [
                asyncio.create_task(
                    _reply(
                        replies_stub.SendMessage(
                            conversation_service_pb2.SendMessageRequest(
                                conversation=name, content=LONG_MESSAGE
                            ),
                            metadata=owner.metadata(),
                            timeout=GRACE,
                        ),
                        event,
                    )
                )
                for name, event in zip(conversations, flowing, strict=True)
            ]
            for event in flowing:
                await asyncio.wait_for(event.wait(), 30)
            unary = [asyncio.create_task(client.me(owner)) for _ in range(300)]
            await asyncio.sleep(0.05)  # sent; most still wait in grpc's queue or a handler

            unfinished = sum(not r.done() for r in unary)
            started = time.monotonic()
            first.process.send_signal(signal.SIGTERM)
            cut = await asyncio.gather(*(_events_until_error(s) for s in subscriptions))
            # Replies are still running: a call arriving now may have been sent before
            # SIGTERM (grpc queues calls under load), so it is still served.
            late = await client.me(owner)
            reply_frames = await asyncio.gather(*replies, return_exceptions=True)
            answered = await asyncio.gather(*unary, return_exceptions=True)
            code = await asyncio.to_thread(first.process.wait, GRACE + 15)
            elapsed = time.monotonic() - started
            await client.close()
            logs = first.logs()

        assert unfinished > 0, "no unary call was in flight at SIGTERM"
        assert CONTEXT_ERROR not in logs
        assert late.user.name == owner.user
        failed = [r for r in answered if isinstance(r, BaseException)]
        assert not failed, failed[:3]
        for frames in reply_frames:
            assert isinstance(frames, list), frames
            completion = frames[-1]
            assert completion.WhichOneof("frame") == "completion"
            assert completion.completion.finish_reason == message_pb2.FINISH_REASON_STOP
            assert completion.completion.message.content
        for (frames, error), opened_at in zip(cut, positions, strict=True):
            assert error.code() is grpc.StatusCode.UNAVAILABLE
            info = details(error)
            assert info["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"
            assert "RetryInfo" in info
            token = _trailer(error, RESUME_HEADER)
            assert token
            assert info["ErrorInfo"].metadata["resume_token"] == token
            assert token == (_token_of(frames[-1]) if frames else opened_at)
        assert code == 0
        assert elapsed < GRACE / 2
        assert "Traceback" not in logs

        # Every stream resumes on a new server with nothing lost or repeated: the reply
        # events written during the drain come first, then what happens next.
        with cortex_server(tmp_path / "second", env) as second:
            client = EventsClient(second.address)
            before = [_workspace_sequences(frames) for frames, _ in cut]
            resumed = [
                client.subscribe(
                    owner, workspaces=[workspace], resume_token=_trailer(e, RESUME_HEADER)
                )
                for _, e in cut
            ]
            await client.rename(owner, workspace, "after the restart")
            after = await asyncio.gather(*(_sequences_until_rename(s) for s in resumed))
            for stream in resumed:
                stream.cancel()
            await client.close()

    for seen_before, seen_after in zip(before, after, strict=True):
        sequences = seen_before + seen_after
        assert seen_after, "nothing was replayed"
        assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))


def _workspace_sequences(frames: list[Any]) -> list[int]:
    return [
        int(f.event.sequence)
        for f in frames
        if f.WhichOneof("frame") == "event" and f.event.workspace
    ]


async def _sequences_until_rename(stream: Any) -> list[int]:
    sequences: list[int] = []
    while True:
        frame = await read_frame(stream, within=30)
        kind = frame.WhichOneof("frame")
        assert kind != "replay_unavailable", frame
        if kind != "event" or not frame.event.workspace:
            continue
        sequences.append(int(frame.event.sequence))
        if frame.event.type == event_pb2.EVENT_TYPE_WORKSPACE_UPDATED:
            return sequences


async def test_every_unary_call_sent_before_sigterm_succeeds(tmp_path: Path) -> None:
    """1,000 cheap calls at once, SIGTERM right after they are sent: most of them still
    wait in grpc's queue, and each is served (on main, about 90 % were CANCELLED)."""
    env = {"CORTEX_JWT_SECRET": JWT_SECRET, "CORTEX_SHUTDOWN_GRACE": str(GRACE)}
    with cortex_server(tmp_path, env) as server:
        clients = [EventsClient(server.address) for _ in range(4)]
        owner = await clients[0].register()
        calls = [asyncio.create_task(clients[i % 4].me(owner)) for i in range(1000)]
        await asyncio.sleep(0.05)  # sent
        server.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls, return_exceptions=True)
        code = await asyncio.to_thread(server.process.wait, GRACE + 15)
        for client in clients:
            await client.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, f"{len(failed)} failed, e.g. {failed[0]}"
    assert code == 0


_KILLED_CLIENT = """
import sys, time
import grpc
from cortex.context.v1 import conversation_service_pb2 as pb
from cortex.context.v1 import conversation_service_pb2_grpc as pb_grpc
from cortex.events.v1 import event_service_pb2 as events_pb
from cortex.events.v1 import event_service_pb2_grpc as events_grpc

address, token, message, conversations = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
channel = grpc.insecure_channel(address)
metadata = [("authorization", "Bearer " + token)]
replies = pb_grpc.ConversationServiceStub(channel)
events = events_grpc.EventServiceStub(channel)
calls = [
    replies.SendMessage(pb.SendMessageRequest(conversation=c, content=message), metadata=metadata)
    for c in conversations
]
calls += [
    events.SubscribeEvents(events_pb.SubscribeEventsRequest(), metadata=metadata)
    for _ in range(20)
]
for call in calls:
    next(call)
print("streaming", flush=True)
time.sleep(600)
"""


async def test_streams_of_a_killed_client_end_cleanly(tmp_path: Path) -> None:
    """A client killed while replies and event streams write to it: each stream ends in
    its own call (a reply stores its partial text and frees the conversation), nothing
    is logged as an error, and the server goes on serving."""
    env = {
        "CORTEX_JWT_SECRET": JWT_SECRET,
        "CORTEX_EVENTS_HEARTBEAT": "0.2",
        "CORTEX_LOCAL_LLM_DELAY": "0.1",  # 40 words: about 4 s
        "CORTEX_MAX_STREAMS_PER_USER": "1000",  # 60 streams of one user: not a test of the cap
    }
    with cortex_server(tmp_path, env) as server:
        client = EventsClient(server.address)
        owner = await client.register()
        workspace = str((await client.first_workspace(owner)).name)
        conversations = [await _conversation(client.channel, owner, workspace) for _ in range(30)]
        for _ in range(2):  # the cut lands mid-write in most rounds, not all
            child = await asyncio.create_subprocess_exec(
                *(sys.executable, "-c", _KILLED_CLIENT, server.address, owner.access_token),
                *(LONG_MESSAGE, *conversations),
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                assert child.stdout is not None
                line = await asyncio.wait_for(child.stdout.readline(), 60)
                assert line.strip() == b"streaming"
                await asyncio.sleep(0.3)
            finally:
                child.kill()
                await child.wait()
            stored = await asyncio.gather(
                *(_last_reply(client.channel, owner, name) for name in conversations)
            )
            assert all(r == message_pb2.FINISH_REASON_CANCELLED for r in stored), stored
        health = health_pb2_grpc.HealthStub(client.channel)
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        await client.close()
        code = await asyncio.to_thread(server.terminate)
        logs = server.logs()
    assert code == 0
    assert CONTEXT_ERROR not in logs
    assert "Traceback" not in logs


async def _last_reply(channel: grpc.aio.Channel, account: Account, conversation: str) -> int:
    """The finish reason of the conversation's newest message once it is a reply."""
    stub = conversation_grpc.ConversationServiceStub(channel)
    request = conversation_service_pb2.ListMessagesRequest(
        parent=conversation, page_size=1, order=conversation_service_pb2.MESSAGE_ORDER_NEWEST_FIRST
    )
    async with asyncio.timeout(30):
        while True:
            response = await stub.ListMessages(request, metadata=account.metadata(), timeout=10)
            newest = response.messages[0] if response.messages else None
            if newest is not None and newest.role == message_pb2.MESSAGE_ROLE_ASSISTANT:
                return int(newest.finish_reason)
            await asyncio.sleep(0.05)


async def _first_frame(stream: Any) -> Any:
    try:
        return await stream.read()
    except grpc.aio.AioRpcError as error:
        return error


async def test_a_burst_past_the_admission_limit_is_refused_with_retryable_details(
    tmp_path: Path,
) -> None:
    """20 calls may run, 10 more may wait for a slot; of a burst of 100 event streams
    the other 70 are refused with RESOURCE_EXHAUSTED, ErrorInfo and RetryInfo, and
    the waiting ones start as slots free up."""
    env = {
        "CORTEX_JWT_SECRET": JWT_SECRET,
        "CORTEX_EVENTS_HEARTBEAT": "0.5",
        "CORTEX_MAX_CONCURRENT_RPCS": "20",
        "CORTEX_MAX_PENDING_REQUESTS": "10",
    }
    with cortex_server(tmp_path, env) as server:
        client = EventsClient(server.address)
        owner = await client.register()
        streams = [client.subscribe(owner) for _ in range(100)]
        reads = {asyncio.ensure_future(_first_frame(s)): s for s in streams}
        pending: set[asyncio.Future[Any]] = set(reads)
        while len(pending) > 10:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        outcomes = [read.result() for read in reads if read.done()]
        refusals = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        served = [reads[r] for r in reads if r.done() and not isinstance(r.result(), Exception)]

        assert len(served) == 20
        assert len(refusals) == 70
        for refusal in refusals:
            assert refusal.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            info = details(refusal)
            assert info["ErrorInfo"].reason == "TOO_MANY_REQUESTS"
            assert info["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0

        for stream in served[:10]:  # ten slots free up: the ten waiting streams start
            stream.cancel()
        waited = await asyncio.wait_for(asyncio.gather(*pending), 30)
        assert all(frame.WhichOneof("frame") == "heartbeat" for frame in waited)
        for stream in streams:
            stream.cancel()
        await client.close()


async def test_a_reply_longer_than_the_grace_is_stored_and_its_retry_gets_the_completion(
    tmp_path: Path,
) -> None:
    """The grace runs out mid-reply: the client gets UNAVAILABLE with RetryInfo, the
    partial reply is stored (FINISH_REASON_CANCELLED), and retrying with the same
    idempotency key on the next server returns it with its completion frame."""
    env = {
        "CORTEX_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        "CORTEX_JWT_SECRET": JWT_SECRET,
        "CORTEX_SHUTDOWN_GRACE": "2",
        "CORTEX_LOCAL_LLM_DELAY": "0.25",  # 40 words: about 10 s
    }
    request = dict(content=LONG_MESSAGE, idempotency_key="drain-retry-1")
    with cortex_server(tmp_path / "first", env) as first:
        client = EventsClient(first.address)
        owner = await client.register()
        workspace = str((await client.first_workspace(owner)).name)
        name = await _conversation(client.channel, owner, workspace)
        stub = conversation_grpc.ConversationServiceStub(client.channel)
        stream = stub.SendMessage(
            conversation_service_pb2.SendMessageRequest(conversation=name, **request),
            metadata=owner.metadata(),
        )
        received = ""
        while not received:
            frame = await read_frame(stream, within=30)
            received += frame.delta.text
        first.process.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            while True:
                received += (await read_frame(stream, within=30)).delta.text
        code = await asyncio.to_thread(first.process.wait, 30)
        await client.close()
    assert code == 0
    assert cut.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(cut.value)["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"
    assert "RetryInfo" in details(cut.value)

    with cortex_server(tmp_path / "second", env) as second:
        client = EventsClient(second.address)
        stub = conversation_grpc.ConversationServiceStub(client.channel)
        frames = [
            frame
            async for frame in stub.SendMessage(
                conversation_service_pb2.SendMessageRequest(conversation=name, **request),
                metadata=owner.metadata(),
                timeout=30,
            )
        ]
        await client.close()
    completion = frames[-1].completion
    assert frames[-1].WhichOneof("frame") == "completion"
    assert completion.finish_reason == message_pb2.FINISH_REASON_CANCELLED
    assert completion.message.content.startswith(received)
    assert len(completion.message.content.split()) < 40


async def test_a_reconnect_burst_of_2000_streams_is_never_refused_without_details(
    tmp_path: Path,
) -> None:
    """Every client of a restarted replica reconnects at once, on default settings:
    each stream opens or is refused with a retryable status carrying ErrorInfo and
    RetryInfo (grpc core's pending-request limit refused about 10 % as CANCELLED)."""
    env = {"CORTEX_JWT_SECRET": JWT_SECRET, "CORTEX_EVENTS_HEARTBEAT": "1"}
    with cortex_server(tmp_path, env) as server:
        channels = [
            grpc.aio.insecure_channel(
                server.address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(20)
        ]
        client = EventsClient(server.address)
        owner = await client.register()
        await client.close()
        stubs = [event_pb2_grpc.EventServiceStub(channel) for channel in channels]
        streams = [
            stubs[i % len(stubs)].SubscribeEvents(
                event_service_pb2.SubscribeEventsRequest(), metadata=owner.metadata()
            )
            for i in range(2000)
        ]
        outcomes = await asyncio.gather(*(_first_frame(s) for s in streams))
        for stream in streams:
            stream.cancel()
        for channel in channels:
            await channel.close()
    refusals = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    for refusal in refusals:
        assert refusal.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
        assert {"ErrorInfo", "RetryInfo"} <= details(refusal).keys()
    assert len(refusals) < len(outcomes)
