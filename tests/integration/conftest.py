"""Fixtures of the integration tier: the fake model servers and the real SDK
adapters pointed at them; the storage of a server with tools; the test MCP server
on Streamable HTTP and its record file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.events import own_redis
from support.fake_llm_servers import FakeAnthropicServer, FakeOpenAIServer
from support.mcp import HttpServer, http_server

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


@pytest.fixture
async def backend(db_url: str, tmp_path: Path) -> AsyncIterator[dict[str, object]]:
    """The server's storage settings: SQLite alone, or PostgreSQL with a Redis of
    the test's own (sign-ups from 127.0.0.1 are throttled in Redis, and a shared
    one is filled by every other suite)."""
    if not db_url.startswith("postgresql"):
        yield {"database_url": db_url}
        return
    async with own_redis(tmp_path / "redis") as redis:
        yield {"database_url": db_url, "redis_url": redis.url}


@pytest.fixture
def record(tmp_path: Path) -> Path:
    """Where the test MCP servers write what they saw."""
    return tmp_path / "mcp-record.txt"


@pytest.fixture
async def http(record: Path) -> AsyncIterator[HttpServer]:
    """The test MCP server on Streamable HTTP, in a process of its own."""
    with http_server(record) as server:
        yield server
