"""The streamed reply: one at a time, idempotent retries, cancellation, failures."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import conversation_pb2, message_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from support.clients import Client, authenticated_channel
from support.inprocess import running_app
from support.rpc import details

from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.domain.llm import Chunk, PromptMessage


class BreaksAfterTwoWords:
    """A provider that fails mid-stream, like a dropped upstream connection."""

    name = "breaking"
    model = "breaking-1"

    async def stream(
        self, messages: Sequence[PromptMessage], *, max_tokens: int, tools: Sequence[Any] = ()
    ) -> AsyncGenerator[Chunk, None]:
        yield Chunk(text="Hello")
        yield Chunk(text=" there")
        raise ConnectionResetError("upstream went away")


class Watched(LocalDevelopmentProvider):
    """The local provider, recording whether each stream was closed."""

    def __init__(self) -> None:
        super().__init__(delay=0.05)
        self.closed = asyncio.Event()

    async def stream(
        self, messages: Sequence[PromptMessage], *, max_tokens: int, tools: Sequence[Any] = ()
    ) -> AsyncGenerator[Chunk, None]:
        try:
            async for chunk in super().stream(messages, max_tokens=max_tokens):
                yield chunk
        finally:
            self.closed.set()


async def _setup(address: str) -> tuple[Client, grpc.aio.Channel, Any, str]:
    client = Client(address)
    account = await client.register()
    workspace = (await client.first_workspace(account)).name
    channel = authenticated_channel(address, account.access_token)
    stub = cgrpc.ConversationServiceStub(channel)
    stub.channel = channel  # type: ignore[attr-defined]  # for tests that open more stubs
    conversation = (
        await stub.CreateConversation(
            cpb.CreateConversationRequest(
                parent=workspace, conversation=conversation_pb2.Conversation(title="t")
            )
        )
    ).conversation.name
    return client, channel, stub, conversation


@pytest.fixture
async def slow(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Any, str, Watched]]:
    provider = Watched()
    async with running_app(tmp_path, database_url=db_url, provider=provider) as running:
        client, channel, stub, conversation = await _setup(running.address)
        try:
            yield stub, conversation, provider
        finally:
            await channel.close()
            await client.close()


def _send(stub: Any, conversation: str, content: str, key: str = "") -> Any:
    return stub.SendMessage(
        cpb.SendMessageRequest(conversation=conversation, content=content, idempotency_key=key),
        timeout=30,
    )


async def _messages(stub: Any, conversation: str) -> list[Any]:
    return list((await stub.ListMessages(cpb.ListMessagesRequest(parent=conversation))).messages)


async def test_a_second_send_while_a_reply_runs_is_refused_naming_it(
    slow: tuple[Any, str, Watched],
) -> None:
    stub, conversation, _ = slow
    first = _send(stub, conversation, "tell me a long story")
    assert (await first.read()).WhichOneof("frame") == "user_message"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _send(stub, conversation, "and another").read()
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    info = details(caught.value)["ErrorInfo"]
    assert info.reason == "REPLY_IN_PROGRESS"
    assert info.metadata["reply"].startswith(conversation + "/messages/")
    frames = [f async for f in first]
    assert frames[-1].completion.message.name == info.metadata["reply"]
    # Once it finished, the conversation takes the next message.
    assert [f async for f in _send(stub, conversation, "next")][-1].WhichOneof("frame") == (
        "completion"
    )


async def test_a_retry_with_the_same_key_returns_the_stored_reply_without_storing_more(
    slow: tuple[Any, str, Watched],
) -> None:
    stub, conversation, _ = slow
    original = [f async for f in _send(stub, conversation, "hi", key="k-1")]
    retried = [f async for f in _send(stub, conversation, "hi", key="k-1")]
    assert retried[0].user_message == original[0].user_message
    assert retried[-1].completion.message == original[-1].completion.message
    assert len(await _messages(stub, conversation)) == 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _send(stub, conversation, "something else", key="k-1").read()
    assert caught.value.code() is grpc.StatusCode.ABORTED
    assert details(caught.value)["ErrorInfo"].reason == "IDEMPOTENCY_KEY_REUSED"


async def test_a_retry_while_the_first_still_streams_joins_it(
    slow: tuple[Any, str, Watched],
) -> None:
    stub, conversation, _ = slow
    first = _send(stub, conversation, "hello", key="k-2")
    await first.read()
    joined = [f async for f in _send(stub, conversation, "hello", key="k-2")]
    original = [f async for f in first]
    assert joined[-1].completion.message == original[-1].completion.message
    streamed = "".join(f.delta.text for f in joined if f.WhichOneof("frame") == "delta")
    assert streamed == joined[-1].completion.message.content
    assert len(await _messages(stub, conversation)) == 2


async def test_cancelling_stops_the_provider_and_keeps_the_partial_reply(
    slow: tuple[Any, str, Watched],
) -> None:
    stub, conversation, provider = slow
    call = _send(stub, conversation, "a long answer please " * 5)
    assert (await call.read()).WhichOneof("frame") == "user_message"
    assert (await call.read()).WhichOneof("frame") == "delta"
    call.cancel()
    await asyncio.wait_for(provider.closed.wait(), 5)
    async with asyncio.timeout(5):
        while len(stored := await _messages(stub, conversation)) < 2:
            await asyncio.sleep(0.05)
    reply = stored[1]
    assert reply.finish_reason == message_pb2.FINISH_REASON_CANCELLED
    assert 0 < len(reply.content) < 100
    assert reply.token_count > 0


async def test_a_provider_failure_mid_reply_ends_with_an_explicit_error_frame(
    db_url: str, tmp_path: Path
) -> None:
    async with running_app(
        tmp_path, database_url=db_url, provider=BreaksAfterTwoWords()
    ) as running:
        client, channel, stub, conversation = await _setup(running.address)
        try:
            frames = [f async for f in _send(stub, conversation, "hi")]
        finally:
            await channel.close()
            await client.close()
    deltas = [f.delta.text for f in frames if f.WhichOneof("frame") == "delta"]
    # Pieces that arrive while a frame is being written ride along in the next one.
    assert "".join(deltas) == "Hello there"
    assert all(deltas)
    completion = frames[-1].completion
    assert completion.finish_reason == message_pb2.FINISH_REASON_ERROR
    assert completion.message.content == "Hello there"
    assert completion.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "PROVIDER_FAILED" in str(completion.error.details)


async def test_a_paced_reply_streams_each_piece_in_its_own_frame_as_it_comes(
    slow: tuple[Any, str, Watched],
) -> None:
    stub, conversation, _ = slow  # a piece every 50 ms
    arrivals: list[tuple[float, str]] = []
    async for frame in _send(stub, conversation, "one two three"):
        if frame.WhichOneof("frame") == "delta":
            arrivals.append((time.monotonic(), frame.delta.text))
        elif frame.WhichOneof("frame") == "completion":
            content = frame.completion.message.content
    assert "".join(text for _, text in arrivals) == content
    assert len(arrivals) == len(content.split(" "))  # nothing was held back to be joined
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.02


async def test_a_second_client_watching_the_conversation_sees_the_reply_arrive(
    slow: tuple[Any, str, Watched],
) -> None:
    from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc

    stub, conversation, _ = slow
    events = event_service_pb2_grpc.EventServiceStub(stub.channel)
    watch = events.SubscribeEvents(
        event_service_pb2.SubscribeEventsRequest(conversation=conversation)
    )
    frames = [f async for f in _send(stub, conversation, "watch me reply")]
    seen: list[Any] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1].WhichOneof("payload") != "reply_completed":
            frame = await watch.read()
            if frame.WhichOneof("frame") == "event":
                seen.append(frame.event)
    watch.cancel()
    kinds = [e.WhichOneof("payload") for e in seen]
    assert kinds[0] == "message_created"
    assert kinds[1] == "reply_started"
    text = "".join(e.reply_delta.text for e in seen if e.WhichOneof("payload") == "reply_delta")
    assert text == frames[-1].completion.message.content
    assert seen[-1].reply_completed.message.name == frames[-1].completion.message.name


async def _workspace_of(stub: Any, conversation: str) -> Any:
    from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc

    workspaces = workspace_service_pb2_grpc.WorkspaceServiceStub(stub.channel)
    name = conversation.split("/conversations/")[0]
    return (
        await workspaces.GetWorkspace(workspace_service_pb2.GetWorkspaceRequest(name=name))
    ).workspace, workspaces


async def test_usage_is_added_up_per_conversation_and_workspace(
    slow: tuple[Any, str, Watched],
) -> None:
    stub, conversation, _ = slow
    usages = []
    for text in ("first question", "second question"):
        frames = [f async for f in _send(stub, conversation, text)]
        usages.append(frames[-2].usage)
    fetched = (
        await stub.GetConversation(cpb.GetConversationRequest(name=conversation))
    ).conversation
    assert fetched.prompt_token_count == sum(u.prompt_tokens for u in usages) > 0
    assert fetched.completion_token_count == sum(u.completion_tokens for u in usages) > 0
    workspace, _ = await _workspace_of(stub, conversation)
    assert workspace.prompt_token_count == fetched.prompt_token_count
    assert workspace.completion_token_count == fetched.completion_token_count


async def test_a_workspace_token_budget_stops_a_reply_and_then_refuses_new_ones(
    slow: tuple[Any, str, Watched],
) -> None:
    from cortex.sessions.v1 import workspace_pb2, workspace_service_pb2
    from google.protobuf import field_mask_pb2

    stub, conversation, _ = slow
    workspace, workspaces = await _workspace_of(stub, conversation)
    await workspaces.UpdateWorkspace(
        workspace_service_pb2.UpdateWorkspaceRequest(
            workspace=workspace_pb2.Workspace(name=workspace.name, token_budget=40),
            update_mask=field_mask_pb2.FieldMask(paths=["token_budget"]),
        )
    )
    frames = [f async for f in _send(stub, conversation, "please answer at length")]
    completion = frames[-1].completion
    assert completion.finish_reason == message_pb2.FINISH_REASON_BUDGET
    assert completion.message.finish_reason == message_pb2.FINISH_REASON_BUDGET
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _send(stub, conversation, "more").read()
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(caught.value)["ErrorInfo"].reason == "TOKEN_BUDGET_EXHAUSTED"
