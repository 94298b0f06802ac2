"""Tool calls inside streamed replies, over a real server on SQLite and on
PostgreSQL + Redis: the loop, its limits, approvals across a restart, cancel
mid-tool, and the conversation's list of tools.

The model is the local development provider in its tool mode (``/call`` and
``/loop`` directives); the tools are ``support.tool_sources.RecordingTools``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.auth.v1 import auth_service_pb2
from cortex.context.v1 import conversation_pb2, message_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.events.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from google.protobuf import field_mask_pb2, json_format
from google.rpc import error_details_pb2
from support.clients import Account, Client, authenticated_channel
from support.inprocess import running_app
from support.rpc import details
from support.tool_sources import RecordingTools

from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.clients.chat import Chat as ChatClient
from cortex_core.domain.llm import PromptMessage

ECHO, SLOW, GUARDED, BROKEN = (f"tools/testing.{n}" for n in ("echo", "slow", "guarded", "broken"))
ALL_TOOLS = [ECHO, SLOW, GUARDED, BROKEN]
APPROVE = cpb.TOOL_APPROVAL_DECISION_APPROVE
DENY = cpb.TOOL_APPROVAL_DECISION_DENY


class Chat:
    """One account's conversation on a running server."""

    def __init__(self, address: str, account: Account, workspace: str) -> None:
        self.account, self.workspace = account, workspace
        self.channel = authenticated_channel(address, account.access_token)
        self.stub = cgrpc.ConversationServiceStub(self.channel)
        self.events = event_service_pb2_grpc.EventServiceStub(self.channel)
        self.conversation = ""

    async def create(self, tools: Sequence[str] = ALL_TOOLS) -> Any:
        created = (
            await self.stub.CreateConversation(
                cpb.CreateConversationRequest(
                    parent=self.workspace,
                    conversation=conversation_pb2.Conversation(title="tools", tools=list(tools)),
                )
            )
        ).conversation
        self.conversation = created.name
        return created

    def call(
        self,
        content: str = "",
        approvals: Sequence[tuple[str, int]] = (),
        key: str = "",
        timeout: float = 30,
    ) -> Any:
        return self.stub.SendMessage(
            cpb.SendMessageRequest(
                conversation=self.conversation,
                content=content,
                idempotency_key=key,
                approvals=[cpb.ToolApproval(tool_call_id=i, decision=d) for i, d in approvals],
            ),
            timeout=timeout,
        )

    async def send(self, content: str = "", approvals: Sequence[tuple[str, int]] = ()) -> list[Any]:
        return [frame async for frame in self.call(content, approvals)]

    async def messages(self) -> list[Any]:
        response = await self.stub.ListMessages(cpb.ListMessagesRequest(parent=self.conversation))
        return list(response.messages)

    async def close(self) -> None:
        await self.channel.close()


@contextlib.asynccontextmanager
async def _server(
    tmp_path: Path, backend: dict[str, object], tools: RecordingTools, **settings: object
) -> AsyncIterator[str]:
    async with running_app(
        tmp_path / "server", tool_sources=[tools], **backend, **settings
    ) as running:
        yield running.address


@contextlib.asynccontextmanager
async def _chat(address: str, account: Account | None = None) -> AsyncIterator[Chat]:
    client = Client(address)
    try:
        account = account or await client.register()
        workspace = (await client.first_workspace(account)).name
        chat = Chat(address, account, workspace)
        try:
            yield chat
        finally:
            await chat.close()
    finally:
        await client.close()


@pytest.fixture
def tools() -> RecordingTools:
    return RecordingTools()


@pytest.fixture
async def chat(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> AsyncIterator[Chat]:
    async with _server(tmp_path, backend, tools) as address, _chat(address) as chat:
        await chat.create()
        yield chat


def _kinds(frames: Sequence[Any]) -> list[str]:
    """Frame kinds in order, a run of deltas as one (a delta may carry several pieces)."""
    kinds: list[str] = []
    for frame in frames:
        kind = frame.WhichOneof("frame")
        if not (kind == "delta" and kinds and kinds[-1] == "delta"):
            kinds.append(kind)
    return kinds


def _output(result: Any) -> dict[str, Any]:
    return json_format.MessageToDict(result.output)


class _LiveEvents:
    """A conversation's event frames, read by a task of their own so a wait can time out
    without cancelling the call (a timed-out ``read()`` cancels a grpc.aio stream)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._frames: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self.probing = True

    async def _read(self) -> None:
        try:
            async for frame in self._stream:
                if not (self.probing is False and _is_probe(frame)):
                    self._frames.put_nowait(frame)
        finally:
            self._frames.put_nowait(None)

    async def next(self, within: float) -> Any:
        async with asyncio.timeout(within):
            frame = await self._frames.get()
        if frame is None:
            raise AssertionError("the event stream ended early")
        return frame

    def __aiter__(self) -> _LiveEvents:
        return self

    async def __anext__(self) -> Any:
        frame = await self._frames.get()
        if frame is None:
            raise StopAsyncIteration
        return frame

    def cancel(self) -> None:
        self._stream.cancel()
        self._reader.cancel()


def _is_probe(frame: Any) -> bool:
    return (
        frame.WhichOneof("frame") == "event"
        and frame.event.HasField("conversation_updated")
        and list(frame.event.conversation_updated.update_mask.paths) == ["title"]
    )


async def _live_events(chat: Chat) -> _LiveEvents:
    """A subscription to the conversation's events, proven live: nothing is sent back
    before the server has registered it, so a probe change (a title update) is repeated
    until its event arrives; later probe events are dropped."""
    stream = _LiveEvents(
        chat.events.SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(
                workspaces=[chat.workspace], conversation=chat.conversation
            )
        )
    )
    async with asyncio.timeout(30):
        while True:
            await chat.stub.UpdateConversation(
                cpb.UpdateConversationRequest(
                    conversation=conversation_pb2.Conversation(
                        name=chat.conversation, title="live"
                    ),
                    update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                )
            )
            with contextlib.suppress(TimeoutError):
                while not _is_probe(await stream.next(within=2)):
                    pass
                stream.probing = False
                return stream


async def _events_until_completed(stream: Any) -> list[Any]:
    found = []
    async with asyncio.timeout(10):
        async for frame in stream:
            if frame.WhichOneof("frame") != "event":
                continue
            found.append(frame.event)
            if frame.event.HasField("reply_completed"):
                return found
    raise AssertionError("the event stream ended early")


async def test_a_reply_with_one_tool_call_streams_and_stores_each_step(
    chat: Chat, tools: RecordingTools
) -> None:
    stream = await _live_events(chat)
    frames = await chat.send('What is this?\n/call testing.echo {"word": "ping"}')
    kinds = _kinds(frames)
    assert kinds[0] == "user_message"
    assert kinds[-2:] == ["usage", "completion"]
    order = [f.WhichOneof("frame") for f in frames]  # kinds merges runs of deltas
    call_at, result_at = order.index("tool_call"), order.index("tool_result")
    assert "delta" in order[1:call_at]
    assert call_at < result_at
    assert kinds.count("tool_call") == kinds.count("tool_result") == 1
    call, result = frames[call_at].tool_call, frames[result_at].tool_result
    assert (call.tool, json_format.MessageToDict(call.arguments)) == (ECHO, {"word": "ping"})
    assert call.state == message_pb2.TOOL_CALL_STATE_CALLED
    assert result.tool_call_id == call.id
    assert _output(result) == {"echo": {"word": "ping"}}
    completion = frames[-1].completion
    assert completion.finish_reason == message_pb2.FINISH_REASON_STOP
    # The result reached the model: the local provider quotes it in its answer.
    assert '{"echo":{"word":"ping"}}' in completion.message.content
    assert tools.calls["echo"] == 1
    assert tools.contexts[0].conversation_id == chat.conversation.rsplit("/", 1)[1]

    stored = await chat.messages()
    assert [m.role for m in stored] == [
        message_pb2.MESSAGE_ROLE_USER,
        message_pb2.MESSAGE_ROLE_ASSISTANT,
        message_pb2.MESSAGE_ROLE_TOOL,
        message_pb2.MESSAGE_ROLE_ASSISTANT,
    ]
    step, tool_message, final = stored[1:]
    assert step.finish_reason == message_pb2.FINISH_REASON_TOOL_CALLS
    assert [c.id for c in step.tool_calls] == [call.id]
    assert step.content == "".join(f.delta.text for f in frames[1:call_at])
    assert tool_message.tool_result.tool_call_id == call.id
    assert _output(tool_message.tool_result) == {"echo": {"word": "ping"}}
    assert final.name == completion.message.name
    assert final.content == "".join(f.delta.text for f in frames[result_at:] if f.delta.text)

    events = await _events_until_completed(stream)
    kinds_of_events = [e.WhichOneof("payload") for e in events]
    requested = kinds_of_events.index("tool_call_requested")
    completed = kinds_of_events.index("tool_call_completed")
    assert kinds_of_events[0] == "message_created"
    assert requested < completed
    assert events[requested].tool_call_requested.message == step.name
    assert events[requested].tool_call_requested.tool_call.id == call.id
    assert events[completed].tool_call_completed.message == tool_message.name
    assert events[requested].type == event_pb2.EVENT_TYPE_TOOL_CALL_REQUESTED
    created = [e.message_created.message.name for e in events if e.HasField("message_created")]
    assert created == [m.name for m in stored]
    stream.cancel()


async def test_parallel_calls_run_at_once_up_to_the_cap(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    async with (
        _server(tmp_path, backend, tools, tool_parallel=2) as address,
        _chat(address) as chat,
    ):
        await chat.create()
        directives = "\n".join('/call testing.slow {"seconds": 0.3}' for _ in range(5))
        loop = asyncio.get_running_loop()
        began = loop.time()
        frames = await chat.send(directives)
        took = loop.time() - began
    results = [f.tool_result for f in frames if f.WhichOneof("frame") == "tool_result"]
    assert len(results) == 5
    assert all(_output(r) == {"slept": 0.3} for r in results)
    assert tools.most_at_once == 2
    assert took >= 0.9  # three rounds of 0.3 s with two at a time
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP


async def _one_send(
    backend: dict[str, object],
    tmp_path: Path,
    tools: RecordingTools,
    content: str,
    **settings: object,
) -> tuple[list[Any], list[Any]]:
    """One send in a new conversation on a server with ``settings``: its frames and
    the messages stored."""
    async with _server(tmp_path, backend, tools, **settings) as address, _chat(address) as chat:
        await chat.create()
        frames = await chat.send(content)
        return frames, await chat.messages()


async def test_a_reply_that_keeps_calling_tools_ends_at_the_step_limit(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    frames, stored = await _one_send(
        backend, tmp_path, tools, "/loop testing.echo {}", tool_max_steps=3
    )
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STEP_LIMIT
    assert _kinds(frames).count("tool_call") == _kinds(frames).count("tool_result") == 3
    assert tools.calls["echo"] == 3
    steps = [m for m in stored if m.finish_reason == message_pb2.FINISH_REASON_TOOL_CALLS]
    assert len(steps) == 3
    assert len(stored) == 1 + 3 * 2 + 1
    assert stored[-1].finish_reason == message_pb2.FINISH_REASON_STEP_LIMIT


async def test_a_failing_tool_is_answered_to_the_model_as_an_error(
    chat: Chat, tools: RecordingTools
) -> None:
    frames = await chat.send("/call testing.broken {}")
    (result,) = [f.tool_result for f in frames if f.WhichOneof("frame") == "tool_result"]
    assert not result.HasField("output")
    assert result.error.message == "the broken tool failed on purpose"
    assert result.error.code == grpc.StatusCode.ABORTED.value[0]
    completion = frames[-1].completion
    assert completion.finish_reason == message_pb2.FINISH_REASON_STOP
    assert "TOOL_FAILED" in completion.message.content  # the model was told
    assert "the broken tool failed on purpose" in completion.message.content
    stored = await chat.messages()
    assert stored[2].tool_result.error.message == "the broken tool failed on purpose"


async def test_a_tool_the_conversation_does_not_allow_is_refused_without_running(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    async with _server(tmp_path, backend, tools) as address, _chat(address) as chat:
        await chat.create(tools=[ECHO])
        frames = await chat.send("/call testing.broken {}\n/call testing.echo {}")
    results = {
        f.tool_result.tool: f.tool_result for f in frames if f.WhichOneof("frame") == "tool_result"
    }
    assert _output(results[ECHO]) == {"echo": {}}
    refused = results[BROKEN]
    assert "not enabled" in refused.error.message
    assert "TOOL_NOT_ALLOWED" in frames[-1].completion.message.content
    assert tools.calls["broken"] == 0


async def test_a_reply_without_tools_offers_none_and_makes_no_call(chat: Chat) -> None:
    await chat.stub.UpdateConversation(
        cpb.UpdateConversationRequest(
            conversation=conversation_pb2.Conversation(name=chat.conversation, tools=[]),
            update_mask=field_mask_pb2.FieldMask(paths=["tools"]),
        )
    )
    frames = await chat.send("/call testing.echo {}")
    assert "tool_call" not in _kinds(frames)
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP


async def _wait_for_approval(chat: Chat) -> tuple[Any, list[Any]]:
    frames = await chat.send('/call testing.guarded {"n": 1}\n/call testing.echo {"n": 2}')
    completion = frames[-1].completion
    assert completion.finish_reason == message_pb2.FINISH_REASON_APPROVAL_REQUIRED
    return completion, frames


async def test_an_approval_survives_a_restart_and_the_approved_call_runs(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    async with _server(tmp_path, backend, tools) as address, _chat(address) as chat:
        await chat.create()
        completion, frames = await _wait_for_approval(chat)
        account, conversation = chat.account, chat.conversation
    states = {c.tool: c.state for c in completion.message.tool_calls}
    assert states == {
        GUARDED: message_pb2.TOOL_CALL_STATE_PENDING_APPROVAL,
        ECHO: message_pb2.TOOL_CALL_STATE_CALLED,
    }
    # The call that needs no approval ran; the guarded one did not.
    assert [f.tool_result.tool for f in frames if f.WhichOneof("frame") == "tool_result"] == [ECHO]
    assert (tools.calls["guarded"], tools.calls["echo"]) == (0, 1)
    pending = next(c.id for c in completion.message.tool_calls if c.tool == GUARDED)

    restarted = RecordingTools()
    async with _server(tmp_path, backend, restarted) as address, _chat(address, account) as chat:
        chat.conversation = conversation
        frames = await chat.send(approvals=[(pending, APPROVE)])
        stored = await chat.messages()
    kinds = _kinds(frames)
    assert "user_message" not in kinds
    assert kinds[-1] == "completion"
    (result,) = [f.tool_result for f in frames if f.WhichOneof("frame") == "tool_result"]
    assert (result.tool_call_id, _output(result)) == (pending, {"echo": {"n": 1}})
    assert restarted.calls["guarded"] == 1
    completion = frames[-1].completion
    assert completion.finish_reason == message_pb2.FINISH_REASON_STOP
    assert '{"echo":{"n":1}}' in completion.message.content
    waiting = next(
        m for m in stored if m.finish_reason == message_pb2.FINISH_REASON_APPROVAL_REQUIRED
    )
    assert {c.tool: c.state for c in waiting.tool_calls}[GUARDED] == (
        message_pb2.TOOL_CALL_STATE_CALLED
    )
    # A second continuation finds nothing pending: the call never runs twice.
    async with _server(tmp_path, backend, restarted) as address, _chat(address, account) as chat:
        chat.conversation = conversation
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat.send(approvals=[(pending, APPROVE)])
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert details(caught.value)["ErrorInfo"].reason == "NO_PENDING_TOOL_CALLS"
    assert restarted.calls["guarded"] == 1


async def test_a_denied_call_is_answered_as_denied_after_a_restart(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    async with _server(tmp_path, backend, tools) as address, _chat(address) as chat:
        await chat.create()
        completion, _ = await _wait_for_approval(chat)
        account, conversation = chat.account, chat.conversation
    pending = next(c.id for c in completion.message.tool_calls if c.tool == GUARDED)
    async with _server(tmp_path, backend, tools) as address, _chat(address, account) as chat:
        chat.conversation = conversation
        frames = await chat.send(approvals=[(pending, DENY)])
        stored = await chat.messages()
    (result,) = [f.tool_result for f in frames if f.WhichOneof("frame") == "tool_result"]
    assert result.tool_call_id == pending
    assert result.error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert tools.calls["guarded"] == 0
    assert "TOOL_DENIED" in frames[-1].completion.message.content
    waiting = next(
        m for m in stored if m.finish_reason == message_pb2.FINISH_REASON_APPROVAL_REQUIRED
    )
    assert {c.tool: c.state for c in waiting.tool_calls}[GUARDED] == (
        message_pb2.TOOL_CALL_STATE_DENIED
    )


async def test_a_plain_message_denies_every_pending_call_so_nothing_wedges(
    chat: Chat, tools: RecordingTools
) -> None:
    completion, _ = await _wait_for_approval(chat)
    pending = next(c.id for c in completion.message.tool_calls if c.tool == GUARDED)
    stream = await _live_events(chat)
    frames = await chat.send("never mind, just say hi")
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP
    # The denial is a frame too, before the new message, as it was stored and announced.
    assert _kinds(frames)[:2] == ["tool_result", "user_message"]
    assert frames[0].tool_result.tool_call_id == pending
    assert _error_info(frames[0].tool_result.error)["reason"] == "TOOL_DENIED"
    events = await _events_until_completed(stream)
    stream.cancel()
    completed = [e.tool_call_completed.result for e in events if e.HasField("tool_call_completed")]
    assert [r.tool_call_id for r in completed] == [pending]
    stored = await chat.messages()
    denied = [m for m in stored if m.tool_result.tool_call_id == pending]
    assert len(denied) == 1
    assert denied[0].tool_result.error.message.startswith("denied")
    user = next(i for i, m in enumerate(stored) if m.content == "never mind, just say hi")
    assert stored.index(denied[0]) < user  # decided before the new message
    assert tools.calls["guarded"] == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.send(approvals=[(pending, APPROVE)])
    assert details(caught.value)["ErrorInfo"].reason == "NO_PENDING_TOOL_CALLS"


async def test_bad_approvals_are_refused_with_a_violation_per_problem(chat: Chat) -> None:
    completion, _ = await _wait_for_approval(chat)
    pending = next(c.id for c in completion.message.tool_calls if c.tool == GUARDED)
    cases = [
        ([("nope", APPROVE)], "approvals[0].tool_call_id"),
        ([(pending, APPROVE), (pending, DENY)], "approvals[1].tool_call_id"),
        ([(pending, cpb.TOOL_APPROVAL_DECISION_UNSPECIFIED)], "approvals[0].decision"),
    ]
    for approvals, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat.send(approvals=approvals)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        fields = [v.field for v in details(caught.value)["BadRequest"].field_violations]
        assert fields == [field]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.send("both", approvals=[(pending, APPROVE)])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # Still pending after every refusal.
    frames = await chat.send(approvals=[(pending, APPROVE)])
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP


async def test_cancelling_mid_tool_cancels_the_call_and_stores_the_partial_reply(
    chat: Chat, tools: RecordingTools
) -> None:
    call = chat.call('/call testing.slow {"seconds": 30}')
    async with asyncio.timeout(10):
        async for frame in call:
            if frame.WhichOneof("frame") == "tool_call":
                break
        await tools.slow_started.wait()
    call.cancel()
    async with asyncio.timeout(10):
        await tools.slow_cancelled.wait()
        while True:  # the partial reply is stored after the cancel
            stored = await chat.messages()
            if stored[-1].finish_reason == message_pb2.FINISH_REASON_CANCELLED:
                break
            await asyncio.sleep(0.05)
    roles = [m.role for m in stored]
    assert roles[-3:] == [
        message_pb2.MESSAGE_ROLE_ASSISTANT,
        message_pb2.MESSAGE_ROLE_TOOL,
        message_pb2.MESSAGE_ROLE_ASSISTANT,
    ]
    cancelled = stored[-2].tool_result
    assert cancelled.tool == SLOW
    assert "cancelled" in cancelled.error.message
    info = _error_info(cancelled.error)
    assert info["reason"] == "TOOL_CANCELLED"
    # The conversation goes on.
    frames = await chat.send("still there?")
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP


def _error_info(status: Any) -> dict[str, Any]:
    for detail in status.details:
        if detail.type_url.endswith("google.rpc.ErrorInfo"):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return {"reason": info.reason, "domain": info.domain}
    raise AssertionError("no ErrorInfo")


async def test_a_conversations_tools_are_validated_stored_and_returned(
    chat: Chat, tools: RecordingTools
) -> None:
    fetched = (
        await chat.stub.GetConversation(cpb.GetConversationRequest(name=chat.conversation))
    ).conversation
    assert list(fetched.tools) == ALL_TOOLS
    listed = (
        await chat.stub.ListConversations(cpb.ListConversationsRequest(parent=chat.workspace))
    ).conversations
    assert list(listed[0].tools) == ALL_TOOLS
    bad = [ECHO, "tools/testing.missing", ECHO, "testing.echo"]
    for request in (
        cpb.CreateConversationRequest(
            parent=chat.workspace, conversation=conversation_pb2.Conversation(tools=bad)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await chat.stub.CreateConversation(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        fields = [v.field for v in details(caught.value)["BadRequest"].field_violations]
        assert fields == [
            "conversation.tools[1]",
            "conversation.tools[2]",
            "conversation.tools[3]",
        ]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await chat.stub.UpdateConversation(
            cpb.UpdateConversationRequest(
                conversation=conversation_pb2.Conversation(
                    name=chat.conversation, tools=[ECHO] * 65
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["tools"]),
            )
        )
    assert [v.field for v in details(caught.value)["BadRequest"].field_violations] == [
        "conversation.tools"
    ]
    stream = await _live_events(chat)
    updated = (
        await chat.stub.UpdateConversation(
            cpb.UpdateConversationRequest(
                conversation=conversation_pb2.Conversation(name=chat.conversation, tools=[SLOW]),
                update_mask=field_mask_pb2.FieldMask(paths=["tools"]),
            )
        )
    ).conversation
    assert list(updated.tools) == [SLOW]
    assert updated.title == "live"
    async with asyncio.timeout(10):
        async for frame in stream:
            if frame.WhichOneof("frame") == "event" and frame.event.HasField(
                "conversation_updated"
            ):
                change = frame.event.conversation_updated
                assert list(change.conversation.tools) == [SLOW]
                assert list(change.update_mask.paths) == ["tools"]
                break
    stream.cancel()
    plain = (
        await chat.stub.CreateConversation(
            cpb.CreateConversationRequest(
                parent=chat.workspace, conversation=conversation_pb2.Conversation(title="plain")
            )
        )
    ).conversation
    assert list(plain.tools) == []  # none by default


def test_local_tool_directives_are_read_from_the_last_user_message() -> None:
    async def chunks() -> list[Any]:
        provider = LocalDevelopmentProvider()
        spec = RecordingTools().tools()[0]
        prompt = [PromptMessage("user", 'hi\n/call testing.echo {"a": 1}\n/call testing.slow')]
        return [c async for c in provider.stream(prompt, max_tokens=100, tools=[spec])]

    found = asyncio.run(chunks())
    calls = [call for chunk in found for call in chunk.tool_calls]
    assert [(c.tool, dict(c.arguments)) for c in calls] == [
        ("testing.echo", {"a": 1}),
        ("testing.slow", {}),
    ]
    assert len({c.id for c in calls}) == 2
    assert found[-1].finish is not None
    assert found[-1].finish.value == "tool_calls"


async def test_the_chat_client_shows_tool_calls_and_continues_after_an_approval(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    out = io.StringIO()
    async with _server(tmp_path, backend, tools) as address:
        client = ChatClient(address, out)
        try:
            await client.sign_in("chatter@example.com", "correct horse battery staple 42", "C")
            await client.open(None, [GUARDED])
            await client.send('/call testing.guarded {"x": 1}')
            assert len(client.pending) == 1
            assert f"[waiting for approval: /approve {client.pending[0]}" in out.getvalue()
            await client.send("/approve", client.approvals("/approve"))
        finally:
            await client.close()
    text = out.getvalue()
    assert "[tool call " in text
    assert "tools/testing.guarded" in text
    assert "[tool result " in text
    assert '{"echo": {"x": 1.0}}' in text  # Struct numbers are doubles
    assert tools.calls["guarded"] == 1
    assert client.pending == []


async def test_logging_out_mid_tool_ends_the_reply_and_cancels_the_call(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    async with _server(tmp_path, backend, tools) as address, _chat(address) as chat:
        await chat.create()
        call = chat.call('/call testing.slow {"seconds": 30}')
        async with asyncio.timeout(10):
            await tools.slow_started.wait()
        client = Client(address)
        try:
            await client.auth.Logout(
                auth_service_pb2.LogoutRequest(), metadata=chat.account.metadata(), timeout=10
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async with asyncio.timeout(10):
                    async for _ in call:
                        pass
            assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert details(caught.value)["ErrorInfo"].reason == "SESSION_REVOKED"
            assert tools.slow_cancelled.is_set()
            again = await client.login(chat.account)
            async with authenticated_channel(address, again.access_token) as channel:
                listed = await cgrpc.ConversationServiceStub(channel).ListMessages(
                    cpb.ListMessagesRequest(parent=chat.conversation)
                )
        finally:
            await client.close()
    stored = list(listed.messages)
    assert _error_info(stored[-2].tool_result.error)["reason"] == "TOOL_CANCELLED"
    assert stored[-1].finish_reason == message_pb2.FINISH_REASON_CANCELLED


async def test_a_listed_tool_whose_server_is_gone_is_answered_unavailable(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    other = RecordingTools(server="other")
    async with (
        running_app(tmp_path / "server", tool_sources=[tools, other], **backend) as running,
        _chat(running.address) as chat,
    ):
        await chat.create(tools=[ECHO, "tools/other.echo"])
        account, conversation = chat.account, chat.conversation
    async with _server(tmp_path, backend, tools) as address, _chat(address, account) as chat:
        chat.conversation = conversation  # its tools still list other.echo
        frames = await chat.send("/call other.echo {}\n/call testing.echo {}")
    results = {
        f.tool_result.tool: f.tool_result for f in frames if f.WhichOneof("frame") == "tool_result"
    }
    assert _error_info(results["tools/other.echo"].error)["reason"] == "TOOL_UNAVAILABLE"
    assert results["tools/other.echo"].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert _output(results[ECHO]) == {"echo": {}}
    assert other.calls["echo"] == 0
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP


async def test_a_retry_with_the_same_key_joins_a_tool_reply_in_progress(
    chat: Chat, tools: RecordingTools
) -> None:
    first = chat.call('/call testing.slow {"seconds": 0.5}', key="k-tools")
    async with asyncio.timeout(10):
        await tools.slow_started.wait()
    retried = chat.call('/call testing.slow {"seconds": 0.5}', key="k-tools")
    original = [f async for f in first]
    joined = [f async for f in retried]
    assert _kinds(joined) == _kinds(original)
    assert [f.tool_result.tool_call_id for f in joined if f.HasField("tool_result")] == [
        f.tool_result.tool_call_id for f in original if f.HasField("tool_result")
    ]
    assert tools.calls["slow"] == 1
    again = await chat.send('/call testing.slow {"seconds": 0.5}')  # a new message, no key
    assert again[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP


async def test_heartbeats_come_while_a_tool_call_runs_and_nothing_else_is_sent(
    backend: dict[str, object], tmp_path: Path, tools: RecordingTools
) -> None:
    frames, _ = await _one_send(
        backend, tmp_path, tools, '/call testing.slow {"seconds": 1.1}', events_heartbeat=0.2
    )
    order = [f.WhichOneof("frame") for f in frames]
    call_at, result_at = order.index("tool_call"), order.index("tool_result")
    beats = [f.heartbeat for f in frames[call_at:result_at] if f.HasField("heartbeat")]
    assert 3 <= len(beats) <= 6  # one per 0.2 s of a 1.1 s call
    assert all(beat.server_time.seconds > 0 for beat in beats)
    assert "heartbeat" not in order[:call_at] + order[result_at:]
    assert frames[-1].completion.finish_reason == message_pb2.FINISH_REASON_STOP


async def test_a_tool_call_ends_before_the_rpc_deadline_as_a_timeout_told_to_the_model(
    chat: Chat, tools: RecordingTools
) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    frames = [f async for f in chat.call('/call testing.slow {"seconds": 30}', timeout=4)]
    took = loop.time() - began
    (result,) = [f.tool_result for f in frames if f.HasField("tool_result")]
    assert _error_info(result.error)["reason"] == "TOOL_TIMEOUT"
    assert result.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    (limit,) = tools.time_limits
    assert 2.0 < limit < 3.1  # the 4 s deadline less a quarter, less what came before
    assert took < 4
    completion = frames[-1].completion
    assert completion.finish_reason == message_pb2.FINISH_REASON_STOP
    assert "TOOL_TIMEOUT" in completion.message.content  # the model was told
    stored = await chat.messages()
    assert _error_info(stored[-2].tool_result.error)["reason"] == "TOOL_TIMEOUT"
