"""A streaming reply answers to its caller's session, and the server admits only
so many at once: logout, revocation and token expiry end it with UNAUTHENTICATED
(what was said is kept); one send beyond CORTEX_MAX_ACTIVE_REPLIES is refused up
front with RESOURCE_EXHAUSTED and a RetryInfo."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.auth.v1 import auth_service_pb2 as auth_pb
from cortex.context.v1 import conversation_pb2, message_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.sessions.v1 import session_service_pb2 as session_pb
from support.clients import Account, Client, authenticated_channel
from support.inprocess import running_app
from support.rpc import details

from cortex_core.domain.llm import Chunk, PromptMessage


class SaysOneWordThenThinks:
    """A provider that streams one word and then stalls until it is cancelled, so
    a reply can only end because the server ends it."""

    name = "stalling"
    model = "stalling-1"

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def stream(
        self, messages: Sequence[PromptMessage], *, max_tokens: int, tools: Sequence[Any] = ()
    ) -> AsyncGenerator[Chunk, None]:
        yield Chunk(text="Well")
        try:
            await asyncio.Event().wait()
        finally:
            self.cancelled.set()
        yield Chunk(text=" never")  # pragma: no cover - the wait never returns


class Talker:
    """A signed-in user with a conversation of their own."""

    def __init__(self, address: str, client: Client, account: Account) -> None:
        self.address = address
        self.client = client
        self.account = account
        self.channel = authenticated_channel(address, account.access_token)
        self.stub = cgrpc.ConversationServiceStub(self.channel)
        self.conversation = ""

    def send(self, content: str) -> Any:
        return self.stub.SendMessage(
            cpb.SendMessageRequest(conversation=self.conversation, content=content), timeout=30
        )

    async def started(self, content: str) -> Any:
        """A send whose user message and first word have arrived."""
        call = self.send(content)
        assert (await call.read()).WhichOneof("frame") == "user_message"
        assert (await call.read()).delta.text == "Well"
        return call

    async def stored_messages(self, account: Account) -> list[Any]:
        async with authenticated_channel(self.address, account.access_token) as channel:
            listed = await cgrpc.ConversationServiceStub(channel).ListMessages(
                cpb.ListMessagesRequest(parent=self.conversation)
            )
        return list(listed.messages)


@contextlib.asynccontextmanager
async def talking(address: str) -> AsyncIterator[Talker]:
    client = Client(address)
    talker = Talker(address, client, await client.register())
    try:
        workspace = (await client.first_workspace(talker.account)).name
        created = await talker.stub.CreateConversation(
            cpb.CreateConversationRequest(
                parent=workspace, conversation=conversation_pb2.Conversation(title="t")
            )
        )
        talker.conversation = created.conversation.name
        yield talker
    finally:
        await talker.channel.close()
        await client.close()


@pytest.fixture
def provider() -> SaysOneWordThenThinks:
    return SaysOneWordThenThinks()


@pytest.fixture
async def talker(
    db_url: str, tmp_path: Path, provider: SaysOneWordThenThinks
) -> AsyncIterator[Talker]:
    async with (
        running_app(tmp_path, database_url=db_url, provider=provider) as running,
        talking(running.address) as talker,
    ):
        yield talker


async def _ends_unauthenticated(call: Any) -> str:
    """Read the rest of the stream; return the reason it ended with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(15):
            async for _ in call:
                pass
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    return str(details(caught.value)["ErrorInfo"].reason)


async def _partial_reply(talker: Talker) -> Any:
    """The stored reply, once the server stored it, read with a fresh session."""
    fresh = await talker.client.login(talker.account)
    async with asyncio.timeout(10):
        while len(stored := await talker.stored_messages(fresh)) < 2:
            await asyncio.sleep(0.05)
    return stored[1]


async def test_logging_out_ends_the_callers_streaming_reply_and_keeps_what_was_said(
    talker: Talker, provider: SaysOneWordThenThinks
) -> None:
    call = await talker.started("tell me everything")

    await talker.client.auth.Logout(
        auth_pb.LogoutRequest(), metadata=talker.account.metadata(), timeout=10
    )

    assert await _ends_unauthenticated(call) == "SESSION_REVOKED"
    assert provider.cancelled.is_set()
    reply = await _partial_reply(talker)
    assert (reply.content, reply.finish_reason) == ("Well", message_pb2.FINISH_REASON_CANCELLED)


async def test_revoking_the_session_from_another_device_ends_the_streaming_reply(
    talker: Talker,
) -> None:
    call = await talker.started("tell me everything")
    other = await talker.client.login(talker.account)

    await talker.client.sessions.RevokeSession(
        session_pb.RevokeSessionRequest(name=talker.account.session),
        metadata=other.metadata(),
        timeout=10,
    )

    assert await _ends_unauthenticated(call) == "SESSION_REVOKED"
    reply = await _partial_reply(talker)
    assert (reply.content, reply.finish_reason) == ("Well", message_pb2.FINISH_REASON_CANCELLED)


async def test_a_revocation_made_on_another_replica_ends_the_reply_at_the_next_recheck(
    tmp_path: Path, provider: SaysOneWordThenThinks
) -> None:
    # Two servers over one database; the reply streams from the first, the
    # session is revoked through the second.
    async with (
        running_app(tmp_path, provider=provider, events_heartbeat=0.5) as streaming,
        running_app(tmp_path) as other,
        talking(streaming.address) as talker,
    ):
        call = await talker.started("tell me everything")
        elsewhere = Client(other.address)
        await elsewhere.auth.Logout(
            auth_pb.LogoutRequest(), metadata=talker.account.metadata(), timeout=10
        )
        await elsewhere.close()
        assert await _ends_unauthenticated(call) == "SESSION_REVOKED"
        reply = await _partial_reply(talker)
    assert (reply.content, reply.finish_reason) == ("Well", message_pb2.FINISH_REASON_CANCELLED)


async def test_a_streaming_reply_ends_when_the_access_token_expires(
    tmp_path: Path, provider: SaysOneWordThenThinks
) -> None:
    async with (
        running_app(tmp_path, provider=provider, access_token_ttl=2.0) as running,
        talking(running.address) as talker,
    ):
        call = await talker.started("tell me everything")
        assert await _ends_unauthenticated(call) == "TOKEN_EXPIRED"
        reply = await _partial_reply(talker)
    assert (reply.content, reply.finish_reason) == ("Well", message_pb2.FINISH_REASON_CANCELLED)


async def test_a_send_beyond_the_active_reply_limit_is_refused_up_front_with_retry_info(
    tmp_path: Path, provider: SaysOneWordThenThinks
) -> None:
    async with (
        running_app(tmp_path, provider=provider, max_active_replies=1) as running,
        talking(running.address) as first,
        talking(running.address) as second,
    ):
        streaming = await first.started("take your time")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await second.send("me too").read()
        streaming.cancel()
        refused = details(caught.value)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refused["ErrorInfo"].reason == "TOO_MANY_ACTIVE_REPLIES"
        assert refused["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0
        # Nothing of the refused send was stored.
        assert await second.stored_messages(second.account) == []
