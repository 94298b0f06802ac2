"""Fixtures of the integration tier: the fake model servers and the real SDK
adapters pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.fake_llm_servers import FakeAnthropicServer, FakeOpenAIServer

from cortex_core.adapters.llm.anthropic import AnthropicProvider
from cortex_core.adapters.llm.openai_compatible import OpenAICompatibleProvider


@pytest.fixture
async def openai_server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
async def anthropic_server() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as server:
        yield server


@pytest.fixture
async def openai(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAICompatibleProvider]:
    provider = OpenAICompatibleProvider(
        model="gpt-fake", base_url=openai_server.base_url, api_key="sk-test", timeout=2.0
    )
    yield provider
    await provider.aclose()


@pytest.fixture
async def anthropic(anthropic_server: FakeAnthropicServer) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(
        model="claude-fake", base_url=anthropic_server.base_url, api_key="ak-test", timeout=2.0
    )
    yield provider
    await provider.aclose()
