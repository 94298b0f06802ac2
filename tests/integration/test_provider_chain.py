"""SendMessage through a configured provider chain: the real OpenAI SDK against a
local server, fallback to Anthropic when it is down, and the circuit in health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cortex.context.v1 import conversation_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.clients import Client, authenticated_channel
from support.fake_llm_servers import FakeAnthropicServer, FakeOpenAIServer, Script
from support.inprocess import running_app

from cortex_core.adapters.llm.config import load_llm_config
from cortex_core.settings import EnvReader


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[FakeOpenAIServer, FakeAnthropicServer]]:
    async with FakeOpenAIServer() as openai, FakeAnthropicServer() as anthropic:
        yield openai, anthropic


async def _send(address: str, content: str, *, times: int = 1, key: str = "") -> list[Any]:
    """Send ``content`` to a new conversation ``times`` times (with ``key`` as the
    idempotency key); return the frames of the last send."""
    client = Client(address)
    account = await client.register()
    workspace = (await client.first_workspace(account)).name
    async with authenticated_channel(address, account.access_token) as channel:
        stub = cgrpc.ConversationServiceStub(channel)
        conversation = (
            await stub.CreateConversation(
                cpb.CreateConversationRequest(
                    parent=workspace, conversation=conversation_pb2.Conversation(title="t")
                )
            )
        ).conversation.name
        request = cpb.SendMessageRequest(
            conversation=conversation, content=content, idempotency_key=key
        )
        for _ in range(times):
            frames = [f async for f in stub.SendMessage(request, timeout=30)]
    await client.close()
    return frames


async def test_a_replayed_reply_names_the_provider_and_model_that_wrote_it(
    tmp_path: Path, upstreams: tuple[FakeOpenAIServer, FakeAnthropicServer]
) -> None:
    openai, anthropic = upstreams
    openai.default = Script(status=503)
    llm = load_llm_config(
        EnvReader(
            {
                "CORTEX_LLM_PROVIDERS": "openai,anthropic",
                "CORTEX_OPENAI_BASE_URL": openai.base_url,
                "CORTEX_OPENAI_MODEL": "gpt-fake",
                "CORTEX_ANTHROPIC_BASE_URL": anthropic.base_url,
                "CORTEX_ANTHROPIC_MODEL": "claude-fake",
                "CORTEX_LLM_RETRIES": "0",
            }
        )
    )
    async with running_app(tmp_path, llm=llm) as running:
        replayed = (await _send(running.address, "hello", times=2, key="k-1"))[-1].completion

    assert (replayed.provider, replayed.model) == ("anthropic", "claude-fake")
    assert replayed.message.model == "claude-fake"
    assert replayed.message.metadata["provider"] == "anthropic"


async def test_replies_come_from_the_first_provider_and_fall_back_when_it_fails(
    tmp_path: Path, upstreams: tuple[FakeOpenAIServer, FakeAnthropicServer]
) -> None:
    openai, anthropic = upstreams
    llm = load_llm_config(
        EnvReader(
            {
                "CORTEX_LLM_PROVIDERS": "openai,anthropic,local",
                "CORTEX_OPENAI_BASE_URL": openai.base_url,
                "CORTEX_OPENAI_MODEL": "gpt-fake",
                "CORTEX_ANTHROPIC_BASE_URL": anthropic.base_url,
                "CORTEX_ANTHROPIC_MODEL": "claude-fake",
                "CORTEX_LLM_RETRIES": "1",
                "CORTEX_LLM_BACKOFF": "0.01",
                "CORTEX_LLM_BREAKER_FAILURES": "2",
            }
        )
    )
    async with running_app(tmp_path, llm=llm) as running:
        frames = await _send(running.address, "hello")
        completion = frames[-1].completion
        assert (completion.provider, completion.model) == ("openai", "gpt-fake")
        assert completion.message.content == "Hello, world"
        assert (frames[-2].usage.prompt_tokens, frames[-2].usage.completion_tokens) == (11, 3)

        openai.default = Script(status=503)
        frames = await _send(running.address, "again")
        assert frames[-1].completion.provider == "anthropic"
        assert frames[-1].completion.message.model == "claude-fake"

        await _send(running.address, "and again")  # the second failure opens the circuit
        async with grpc.aio.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            async with asyncio.timeout(10):
                while True:
                    status = await health.Check(
                        health_pb2.HealthCheckRequest(service="cortex.llm.openai")
                    )
                    if status.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                        break
                    await asyncio.sleep(0.2)
            anthropic_status = await health.Check(
                health_pb2.HealthCheckRequest(service="cortex.llm.anthropic")
            )
            assert anthropic_status.status == health_pb2.HealthCheckResponse.SERVING


async def test_cancelling_a_reply_closes_the_upstream_request_at_once(
    tmp_path: Path, upstreams: tuple[FakeOpenAIServer, FakeAnthropicServer]
) -> None:
    openai, _ = upstreams
    openai.default = Script(tokens=["word "] * 200, interval=0.05)
    llm = load_llm_config(
        EnvReader(
            {
                "CORTEX_LLM_PROVIDERS": "openai",
                "CORTEX_OPENAI_BASE_URL": openai.base_url,
                "CORTEX_OPENAI_MODEL": "gpt-fake",
            }
        )
    )
    async with running_app(tmp_path, llm=llm) as running:
        client = Client(running.address)
        account = await client.register()
        workspace = (await client.first_workspace(account)).name
        async with authenticated_channel(running.address, account.access_token) as channel:
            stub = cgrpc.ConversationServiceStub(channel)
            conversation = (
                await stub.CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title="t")
                    )
                )
            ).conversation.name
            call = stub.SendMessage(
                cpb.SendMessageRequest(conversation=conversation, content="go on"), timeout=30
            )
            assert (await call.read()).WhichOneof("frame") == "user_message"
            assert (await call.read()).WhichOneof("frame") == "delta"
            cancelled_at = asyncio.get_running_loop().time()
            call.cancel()
            upstream = openai.requests[-1]
            await asyncio.wait_for(upstream.disconnected.wait(), 2)
            assert not upstream.completed
            closed_after = asyncio.get_running_loop().time() - cancelled_at
            assert closed_after < 2
            async with asyncio.timeout(5):
                while True:
                    stored = (
                        await stub.ListMessages(cpb.ListMessagesRequest(parent=conversation))
                    ).messages
                    if len(stored) == 2:
                        break
                    await asyncio.sleep(0.05)
            assert stored[1].finish_reason == 3  # FINISH_REASON_CANCELLED
        await client.close()
