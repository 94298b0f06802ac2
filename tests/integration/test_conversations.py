"""Conversations, messages, the streamed reply and the context window, over a real
server on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import context_service_pb2 as xpb
from cortex.context.v1 import context_service_pb2_grpc as xgrpc
from cortex.context.v1 import context_window_pb2 as wpb
from cortex.context.v1 import conversation_pb2, message_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from google.protobuf import field_mask_pb2
from support.clients import Account, Client, authenticated_channel, workspace_pb
from support.inprocess import running_app
from support.rpc import details

from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.domain.tasks import TaskKind, TaskState
from cortex_core.services.tasks import queue_job


@dataclass
class Session:
    client: Client
    account: Account
    workspace: str
    channel: grpc.aio.Channel
    conversations: Any
    context: Any

    async def create(self, title: str = "Plans", system_prompt: str = "Be brief.") -> Any:
        response = await self.conversations.CreateConversation(
            cpb.CreateConversationRequest(
                parent=self.workspace,
                conversation=conversation_pb2.Conversation(
                    title=title, system_prompt=system_prompt
                ),
            )
        )
        return response.conversation

    async def send(self, conversation: str, content: str, key: str = "") -> list[Any]:
        request = cpb.SendMessageRequest(
            conversation=conversation, content=content, idempotency_key=key
        )
        return [frame async for frame in self.conversations.SendMessage(request, timeout=30)]


@pytest.fixture
async def server(db_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    async with running_app(tmp_path, database_url=db_url) as running:
        yield running


async def _session(address: str) -> Session:
    client = Client(address)
    account = await client.register()
    workspace = (await client.first_workspace(account)).name
    channel = authenticated_channel(address, account.access_token)
    return Session(
        client,
        account,
        workspace,
        channel,
        cgrpc.ConversationServiceStub(channel),
        xgrpc.ContextServiceStub(channel),
    )


@pytest.fixture
async def alice(server: Any) -> AsyncIterator[Session]:
    session = await _session(server.address)
    yield session
    await session.channel.close()
    await session.client.close()


async def test_a_conversation_is_created_renamed_listed_and_deleted(alice: Session) -> None:
    first = await alice.create("first")
    second = await alice.create("second")
    listed = await alice.conversations.ListConversations(
        cpb.ListConversationsRequest(parent=alice.workspace, page_size=1)
    )
    assert [c.name for c in listed.conversations] == [second.name]  # newest first
    renamed = await alice.conversations.UpdateConversation(
        cpb.UpdateConversationRequest(
            conversation=conversation_pb2.Conversation(name=first.name, title="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["title"]),
        )
    )
    assert renamed.conversation.title == "renamed"
    assert renamed.conversation.system_prompt == "Be brief."
    await alice.send(first.name, "hello")
    await alice.conversations.DeleteConversation(cpb.DeleteConversationRequest(name=first.name))
    for call in (
        alice.conversations.GetConversation(cpb.GetConversationRequest(name=first.name)),
        alice.conversations.ListMessages(cpb.ListMessagesRequest(parent=first.name)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_reply_streams_in_order_and_both_messages_are_stored(alice: Session) -> None:
    conversation = await alice.create()
    frames = await alice.send(conversation.name, "What is the plan for Monday?")
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds[0] == "user_message"
    assert kinds[-2:] == ["usage", "completion"]
    assert set(kinds[1:-2]) == {"delta"}
    user = frames[0].user_message
    assert user.role == message_pb2.MESSAGE_ROLE_USER
    assert user.content == "What is the plan for Monday?"
    assert user.author == alice.account.user
    completion = frames[-1].completion
    streamed = "".join(f.delta.text for f in frames if f.WhichOneof("frame") == "delta")
    assert completion.message.content == streamed
    assert completion.finish_reason == message_pb2.FINISH_REASON_STOP
    assert completion.provider == "local-dev"
    assert completion.message.token_count == frames[-2].usage.completion_tokens
    stored = await alice.conversations.ListMessages(
        cpb.ListMessagesRequest(parent=conversation.name)
    )
    assert [m.name for m in stored.messages] == [user.name, completion.message.name]
    fetched = await alice.conversations.GetConversation(
        cpb.GetConversationRequest(name=conversation.name)
    )
    assert fetched.conversation.message_count == 2


async def test_messages_page_both_ways_in_either_order(alice: Session) -> None:
    conversation = await alice.create()
    for n in range(3):
        await alice.send(conversation.name, f"question {n}")
    newest = cpb.MESSAGE_ORDER_NEWEST_FIRST
    page1 = await alice.conversations.ListMessages(
        cpb.ListMessagesRequest(parent=conversation.name, page_size=4, order=newest)
    )
    page2 = await alice.conversations.ListMessages(
        cpb.ListMessagesRequest(
            parent=conversation.name, page_size=4, order=newest, page_token=page1.next_page_token
        )
    )
    back = await alice.conversations.ListMessages(
        cpb.ListMessagesRequest(
            parent=conversation.name,
            page_size=4,
            order=newest,
            page_token=page2.previous_page_token,
        )
    )
    times = [m.create_time.ToDatetime() for m in [*page1.messages, *page2.messages]]
    assert len(times) == 6
    assert times == sorted(times, reverse=True)
    assert page1.previous_page_token == ""
    assert page2.next_page_token == ""
    assert [m.name for m in back.messages] == [m.name for m in page1.messages]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await alice.conversations.ListMessages(
            cpb.ListMessagesRequest(
                parent=conversation.name,
                order=cpb.MESSAGE_ORDER_OLDEST_FIRST,
                page_token=page1.next_page_token,
            )
        )
    assert details(caught.value)["ErrorInfo"].reason == "INVALID_PAGE_TOKEN"


async def test_viewers_read_but_cannot_send(server: Any, alice: Session) -> None:
    bob = await _session(server.address)
    try:
        await alice.client.workspaces.AddWorkspaceMember(
            workspace_pb.AddWorkspaceMemberRequest(
                parent=alice.workspace, email=bob.account.email, role=3
            ),
            metadata=alice.account.metadata(),
        )
        conversation = await alice.create()
        await bob.conversations.GetConversation(cpb.GetConversationRequest(name=conversation.name))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bob.send(conversation.name, "can I?")
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert details(caught.value)["ErrorInfo"].reason == "EDITOR_REQUIRED"
    finally:
        await bob.channel.close()
        await bob.client.close()


async def test_an_outsider_cannot_send_to_or_read_a_conversation(
    server: Any, alice: Session
) -> None:
    mallory = await _session(server.address)
    try:
        conversation = await alice.create()
        for call in (
            mallory.send(conversation.name, "hi"),
            mallory.context.GetContextWindow(
                xpb.GetContextWindowRequest(conversation=conversation.name)
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() is grpc.StatusCode.NOT_FOUND
            assert details(caught.value)["ErrorInfo"].reason == "CONVERSATION_NOT_FOUND"
    finally:
        await mallory.channel.close()
        await mallory.client.close()


async def _window(alice: Session, conversation: str, budget: int) -> Any:
    return await alice.context.GetContextWindow(
        xpb.GetContextWindowRequest(conversation=conversation, token_budget=budget)
    )


async def test_the_context_window_never_exceeds_its_budget_and_keeps_the_newest(
    alice: Session,
) -> None:
    conversation = await alice.create(system_prompt="You are a careful planner.")
    for n in range(8):
        await alice.send(conversation.name, f"note {n}: " + "details " * (n * 3))
    for budget in (5, 40, 80, 150, 300, 5000):
        window = await _window(alice, conversation.name, budget)
        included = [i for i in window.items if i.decision == wpb.CONTEXT_DECISION_INCLUDED]
        assert window.total_token_count == sum(i.token_count for i in included) <= budget
        assert all(i.reason for i in window.items)
        messages = [i for i in window.items if i.kind == wpb.CONTEXT_ITEM_KIND_MESSAGE]
        assert len(messages) == 16
        kept = [i.decision == wpb.CONTEXT_DECISION_INCLUDED for i in messages]
        # Whatever is kept is the most recent stretch of the conversation.
        assert kept == sorted(kept)
    roomy = await _window(alice, conversation.name, 5000)
    for item in roomy.items:
        # The small budgets above queued a summary; with room for everything it is not used.
        expected = (
            wpb.CONTEXT_DECISION_PRUNED
            if item.kind == wpb.CONTEXT_ITEM_KIND_SUMMARY
            else wpb.CONTEXT_DECISION_INCLUDED
        )
        assert item.decision == expected, item.reason
    assert roomy.items[0].kind == wpb.CONTEXT_ITEM_KIND_SYSTEM_PROMPT


async def test_a_summary_stands_in_for_history_that_no_longer_fits(alice: Session) -> None:
    conversation = await alice.create()
    for n in range(6):
        await alice.send(conversation.name, f"fact {n}: the launch moves to week {n + 10}")
    summary = (
        await alice.context.SummarizeConversation(
            xpb.SummarizeConversationRequest(conversation=conversation.name)
        )
    ).summary
    assert summary.message_count == 12
    assert summary.model.startswith("local-dev/")
    await alice.send(conversation.name, "and now?")
    window = await _window(alice, conversation.name, summary.token_count + 60)
    decisions = {i.kind: [] for i in window.items}
    for item in window.items:
        decisions[item.kind].append(item.decision)
    assert decisions[wpb.CONTEXT_ITEM_KIND_SUMMARY] == [wpb.CONTEXT_DECISION_INCLUDED]
    assert wpb.CONTEXT_DECISION_SUMMARIZED in decisions[wpb.CONTEXT_ITEM_KIND_MESSAGE]
    assert window.total_token_count <= summary.token_count + 60


async def test_summarizing_an_empty_conversation_is_a_failed_precondition(alice: Session) -> None:
    conversation = await alice.create()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await alice.context.SummarizeConversation(
            xpb.SummarizeConversationRequest(conversation=conversation.name)
        )
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_a_queued_summary_job_runs_after_a_restart(db_url: str, tmp_path: Path) -> None:
    async with running_app(tmp_path, database_url=db_url) as running:
        alice = await _session(running.address)
        conversation = await alice.create()
        await alice.send(conversation.name, "remember the blue door")
        await alice.channel.close()
        await alice.client.close()
    workspace_id, conversation_id = conversation.name.split("/")[1::2]
    database = SqlDatabase.from_url(db_url)
    async with database.unit_of_work() as uow:  # queued while no server runs
        job = await queue_job(
            uow,
            TaskKind.SUMMARY,
            workspace_id,
            conversation_id,
            {"conversation_id": conversation_id, "token_budget": 100},
            datetime.now(UTC),
        )
        assert job is not None
        await uow.commit()
    await database.dispose()
    async with running_app(tmp_path, database_url=db_url) as running:
        database = SqlDatabase.from_url(db_url)
        try:
            # The job writes its summary, then the runner marks it done in a second
            # transaction: wait for both (a job that stayed queued would never be done).
            summary = None
            queued = True
            async with asyncio.timeout(15):
                while summary is None or queued:
                    async with database.unit_of_work() as uow:
                        summary = await uow.conversations.latest_summary(conversation_id)
                        open_job = await uow.tasks.find_open(
                            workspace_id, TaskKind.SUMMARY, conversation_id
                        )
                    queued = open_job is not None
                    await asyncio.sleep(0.1)
            async with database.unit_of_work() as uow:
                done = await uow.tasks.get(workspace_id, job.id)
            assert done is not None
            assert done.state is TaskState.SUCCEEDED
            assert "blue door" in summary.text
        finally:
            await database.dispose()
