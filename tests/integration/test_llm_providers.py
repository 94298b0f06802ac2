"""The real openai and anthropic SDKs against local servers speaking their wire formats.

Every test goes through HTTP on 127.0.0.1: streaming, usage, finish reasons, retries,
fallback, circuit breakers, failures mid-reply and cancellation (the upstream
connection is closed, observed by the server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.fake_llm_servers import FakeAnthropicServer, FakeOpenAIServer, Script, unused_port

from cortex_core.adapters.llm.anthropic import AnthropicProvider
from cortex_core.adapters.llm.errors import ProviderError, ProviderFailure
from cortex_core.adapters.llm.fallback import Backoff, BreakerPolicy, FallbackProvider
from cortex_core.adapters.llm.openai_compatible import OpenAICompatibleProvider
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage
from cortex_core.ports import LlmProvider

PROMPT = [
    PromptMessage("system", "You are terse."),
    PromptMessage("system", "Relevant memory: likes tea"),
    PromptMessage("user", "Hi"),
    PromptMessage("assistant", "Hello."),
    PromptMessage("user", "Tea?"),
]
FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.0)


async def collect(provider: LlmProvider, max_tokens: int = 100) -> list[Chunk]:
    return [chunk async for chunk in provider.stream(PROMPT, max_tokens=max_tokens)]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def served_by(chunks: list[Chunk]) -> set[tuple[str, str]]:
    """The (provider, model) pairs the chain's chunks name."""
    return {(c.provider, c.model) for c in chunks}


# --- the wire formats ---------------------------------------------------------------


async def test_openai_reply_streams_text_then_the_providers_usage_then_the_finish_reason(
    openai: OpenAICompatibleProvider, openai_server: FakeOpenAIServer
) -> None:
    chunks = await collect(openai, max_tokens=64)

    assert [c.text for c in chunks[:3]] == ["Hello", ",", " world"]
    assert chunks[3] == Chunk(usage=Usage(prompt_tokens=11, completion_tokens=3))
    assert chunks[4] == Chunk(finish=FinishReason.STOP)
    (request,) = openai_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "gpt-fake"
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.body["max_tokens"] == 64
    assert [m["role"] for m in request.body["messages"]] == [
        "system",
        "system",
        "user",
        "assistant",
        "user",
    ]


async def test_openai_length_and_content_filter_map_to_domain_finish_reasons(
    openai: OpenAICompatibleProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(Script(finish="length"), Script(finish="content_filter", usage=None))

    assert (await collect(openai))[-1].finish is FinishReason.LENGTH
    filtered = await collect(openai)
    assert filtered[-1].finish is FinishReason.ERROR
    assert all(c.usage is None for c in filtered)  # not reported: none invented


async def test_max_completion_tokens_is_sent_when_the_endpoint_wants_it(
    openai_server: FakeOpenAIServer,
) -> None:
    provider = OpenAICompatibleProvider(
        model="o-fake",
        base_url=openai_server.base_url,
        token_limit_field="max_completion_tokens",
    )
    await collect(provider, max_tokens=7)
    await provider.aclose()

    assert openai_server.requests[0].body["max_completion_tokens"] == 7
    assert "max_tokens" not in openai_server.requests[0].body


async def test_anthropic_gets_system_messages_in_the_system_parameter_and_streams_usage(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    chunks = await collect(anthropic, max_tokens=32)

    assert text_of(chunks) == "Hello, world"
    assert chunks[-2] == Chunk(usage=Usage(prompt_tokens=11, completion_tokens=3))
    assert chunks[-1] == Chunk(finish=FinishReason.STOP)
    (request,) = anthropic_server.requests
    assert request.path == "/v1/messages"
    # anthropic 2.x sends the key as a bearer token
    assert request.headers["authorization"] == "Bearer ak-test"
    assert "anthropic-version" in request.headers
    assert request.body["system"] == "You are terse.\n\nRelevant memory: likes tea"
    assert request.body["messages"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tea?"},
    ]
    assert request.body["max_tokens"] == 32
    assert request.body["stream"] is True


async def test_anthropic_max_tokens_stop_is_a_length_finish(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    anthropic_server.queue(Script(finish="max_tokens"))

    assert (await collect(anthropic))[-1].finish is FinishReason.LENGTH


# --- failures of one provider ---------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "retryable"),
    [
        (429, "PROVIDER_RATE_LIMITED", True),
        (500, "PROVIDER_UNAVAILABLE", True),
        (503, "PROVIDER_UNAVAILABLE", True),
        (401, "PROVIDER_AUTH_FAILED", False),
        (404, "PROVIDER_MODEL_NOT_FOUND", False),
        (400, "PROVIDER_BAD_REQUEST", False),
    ],
)
@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_http_errors_become_provider_errors_with_a_reason_and_no_sdk_type(
    kind: str,
    status: int,
    reason: str,
    retryable: bool,
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    provider: LlmProvider = openai if kind == "openai" else anthropic
    server = openai_server if kind == "openai" else anthropic_server
    server.queue(Script(status=status))

    with pytest.raises(ProviderError) as caught:
        await collect(provider)

    assert type(caught.value) is ProviderError
    assert caught.value.reason == reason
    assert caught.value.retryable is retryable
    assert caught.value.before_first_token
    assert caught.value.provider == kind
    assert "Error" not in caught.value.message  # no SDK class names


async def test_a_refused_connection_is_a_retryable_unreachable_error() -> None:
    provider = OpenAICompatibleProvider(
        model="m", base_url=f"http://127.0.0.1:{unused_port()}/v1", api_key="k"
    )
    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    await provider.aclose()

    assert caught.value.reason == "PROVIDER_UNREACHABLE"
    assert caught.value.retryable


async def test_a_provider_that_does_not_answer_in_time_is_a_timeout(
    anthropic_server: FakeAnthropicServer,
) -> None:
    provider = AnthropicProvider(
        model="m", base_url=anthropic_server.base_url, api_key="k", timeout=0.2
    )
    anthropic_server.queue(Script(headers_delay=1.0))

    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    await provider.aclose()

    assert caught.value.reason == "PROVIDER_TIMEOUT"
    assert caught.value.before_first_token


async def test_a_rate_limit_carries_the_providers_retry_after(
    openai: OpenAICompatibleProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(Script(status=429, headers={"retry-after": "7"}))

    with pytest.raises(ProviderError) as caught:
        await collect(openai)

    assert caught.value.retry_after == 7.0


# --- the fallback chain over real SDKs ------------------------------------------------


def chain(*providers: LlmProvider, **kwargs: Any) -> FallbackProvider:
    kwargs.setdefault("backoff", FAST)
    return FallbackProvider(providers, **kwargs)


async def test_a_rate_limited_request_is_retried_on_the_same_provider_and_answered(
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    openai_server.queue(Script(status=429), Script(status=500))
    llm = chain(openai, anthropic, retries=2)

    chunks = await collect(llm)

    assert text_of(chunks) == "Hello, world"
    assert chunks[-1].finish is FinishReason.STOP
    assert len(openai_server.requests) == 3
    assert anthropic_server.requests == []
    assert served_by(chunks) == {("openai", "gpt-fake")}


async def test_server_errors_exhaust_the_retries_then_the_next_provider_answers(
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    openai_server.default = Script(status=500)
    llm = chain(openai, anthropic, retries=2)

    chunks = await collect(llm)

    assert text_of(chunks) == "Hello, world"
    assert chunks[-2].usage == Usage(11, 3)
    assert len(openai_server.requests) == 3
    assert len(anthropic_server.requests) == 1
    assert served_by(chunks) == {("anthropic", "claude-fake")}


async def test_an_unreachable_provider_hands_over_to_the_next(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    dead = OpenAICompatibleProvider(
        model="m", base_url=f"http://127.0.0.1:{unused_port()}/v1", api_key="k"
    )
    llm = chain(dead, anthropic, retries=1)

    chunks = await collect(llm)
    assert text_of(chunks) == "Hello, world"
    assert served_by(chunks) == {("anthropic", "claude-fake")}
    await dead.aclose()


async def test_a_long_retry_after_moves_on_at_once_instead_of_waiting(
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
) -> None:
    openai_server.queue(Script(status=429, headers={"retry-after": "60"}))
    llm = chain(openai, anthropic, retries=2)

    started = time.monotonic()
    assert text_of(await collect(llm)) == "Hello, world"

    assert time.monotonic() - started < 2
    assert len(openai_server.requests) == 1


async def test_a_bad_key_is_not_retried_and_the_next_provider_answers(
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
) -> None:
    openai_server.queue(Script(status=401))
    llm = chain(openai, anthropic, retries=2)

    assert text_of(await collect(llm)) == "Hello, world"
    assert len(openai_server.requests) == 1


async def test_when_every_provider_fails_nothing_is_streamed_and_the_chain_is_unavailable(
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    openai_server.default = Script(status=503)
    anthropic_server.default = Script(status=529)
    llm = chain(openai, anthropic, retries=1)
    seen: list[Chunk] = []

    with pytest.raises(ProviderFailure) as caught:
        async for chunk in llm.stream(PROMPT, max_tokens=10):
            seen.append(chunk)

    assert seen == []
    assert caught.value.reason == "NO_PROVIDER_AVAILABLE"
    assert caught.value.before_first_token
    assert [e.reason for e in caught.value.errors] == ["PROVIDER_UNAVAILABLE"] * 4
    assert "openai" in caught.value.message
    assert "anthropic" in caught.value.message


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_connection_cut_mid_reply_ends_the_reply_with_an_explicit_failure(
    kind: str,
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    first, second = (openai, anthropic) if kind == "openai" else (anthropic, openai)
    server = openai_server if kind == "openai" else anthropic_server
    other = anthropic_server if kind == "openai" else openai_server
    server.queue(Script(cut_after=2))
    llm = chain(first, second)
    seen: list[Chunk] = []

    with pytest.raises(ProviderFailure) as caught:
        async for chunk in llm.stream(PROMPT, max_tokens=10):
            seen.append(chunk)

    assert [c.text for c in seen] == ["Hello", ","]
    assert caught.value.reason == "PROVIDER_FAILED"
    assert not caught.value.before_first_token
    assert caught.value.provider == kind
    assert caught.value.errors[-1].reason == "PROVIDER_UNREACHABLE"
    assert other.requests == []  # a started reply is never restarted elsewhere


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_an_error_event_mid_reply_ends_the_reply_with_an_explicit_failure(
    kind: str,
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    provider: LlmProvider = openai if kind == "openai" else anthropic
    server = openai_server if kind == "openai" else anthropic_server
    server.queue(Script(error_after=1))
    seen: list[Chunk] = []

    with pytest.raises(ProviderFailure) as caught:
        async for chunk in chain(provider).stream(PROMPT, max_tokens=10):
            seen.append(chunk)

    assert [c.text for c in seen] == ["Hello"]
    assert caught.value.reason == "PROVIDER_FAILED"
    assert caught.value.errors[-1].reason == "PROVIDER_UNAVAILABLE"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_stream_that_ends_without_a_finish_reason_is_not_a_silent_cut(
    kind: str,
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    provider: LlmProvider = openai if kind == "openai" else anthropic
    server = openai_server if kind == "openai" else anthropic_server
    server.queue(Script(finish=None))

    with pytest.raises(ProviderFailure) as caught:
        await collect(chain(provider))

    assert caught.value.reason == "PROVIDER_FAILED"
    assert caught.value.errors[-1].reason == "PROVIDER_STREAM_TRUNCATED"


async def test_the_circuit_opens_after_repeated_failures_skips_the_provider_then_half_opens(
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    now = [1000.0]
    openai_server.default = Script(status=500)
    llm = chain(
        openai,
        anthropic,
        retries=0,
        breaker=BreakerPolicy(failure_threshold=2, reset_after=30.0),
        monotonic=lambda: now[0],
    )

    for _ in range(2):
        assert text_of(await collect(llm)) == "Hello, world"
    assert llm.states() == {"openai": "open", "anthropic": "closed"}

    assert text_of(await collect(llm)) == "Hello, world"
    assert len(openai_server.requests) == 2  # skipped while open
    assert len(anthropic_server.requests) == 3

    now[0] += 30.0
    assert llm.states()["openai"] == "half_open"
    openai_server.default = Script()
    chunks = await collect(llm)
    assert len(openai_server.requests) == 3  # the probe
    assert llm.states() == {"openai": "closed", "anthropic": "closed"}
    assert served_by(chunks) == {("openai", "gpt-fake")}


async def test_a_failed_probe_opens_the_circuit_again(
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
) -> None:
    now = [0.0]
    openai_server.default = Script(status=502)
    llm = chain(
        openai,
        anthropic,
        retries=3,
        breaker=BreakerPolicy(failure_threshold=1, reset_after=10.0),
        monotonic=lambda: now[0],
    )
    await collect(llm)
    assert len(openai_server.requests) == 1  # open after one failure: no retries
    now[0] = 10.0

    await collect(llm)

    assert len(openai_server.requests) == 2  # one probe, not retried
    assert llm.states()["openai"] == "open"


# --- cancellation ---------------------------------------------------------------------


def slow_script() -> Script:
    return Script(tokens=[f" t{i}" for i in range(200)], interval=0.02)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("script", [slow_script, lambda: Script(hang_after=2)])
async def test_closing_the_stream_after_two_chunks_closes_the_upstream_request(
    kind: str,
    script: Callable[[], Script],
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    provider: LlmProvider = openai if kind == "openai" else anthropic
    server = openai_server if kind == "openai" else anthropic_server
    server.queue(script())
    stream = chain(provider).stream(PROMPT, max_tokens=500)

    await anext(stream)
    await anext(stream)
    closed_at = time.monotonic()
    await stream.aclose()

    request = server.requests[-1]
    await asyncio.wait_for(request.disconnected.wait(), timeout=1.0)
    assert request.disconnected_at is not None
    assert request.disconnected_at - closed_at < 1.0
    assert not request.completed


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_cancelling_the_reading_task_closes_the_upstream_request(
    kind: str,
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> None:
    provider: LlmProvider = openai if kind == "openai" else anthropic
    server = openai_server if kind == "openai" else anthropic_server
    server.queue(Script(hang_after=2))
    llm = chain(provider)
    two = asyncio.Event()
    seen: list[str] = []

    async def read() -> None:
        async for chunk in llm.stream(PROMPT, max_tokens=500):
            seen.append(chunk.text)
            if len(seen) == 2:
                two.set()

    task = asyncio.create_task(read())
    await asyncio.wait_for(two.wait(), timeout=2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    await asyncio.wait_for(server.requests[-1].disconnected.wait(), timeout=1.0)
    assert seen == ["Hello", ","]
    assert llm.states()[kind] == "closed"  # a cancel is not the provider's failure


async def test_a_deadline_while_waiting_for_the_first_token_closes_the_upstream_request(
    openai: OpenAICompatibleProvider, openai_server: FakeOpenAIServer
) -> None:
    openai_server.queue(Script(hang_after=0))

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await collect(chain(openai))

    await asyncio.wait_for(openai_server.requests[-1].disconnected.wait(), timeout=1.0)
