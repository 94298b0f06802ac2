"""The fallback chain's rules: retries with backoff, hand-over, breakers, who served."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence

import pytest

from cortex_core.adapters.llm.errors import ProviderError, ProviderFailure
from cortex_core.adapters.llm.fallback import (
    Backoff,
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    FallbackProvider,
)
from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage
from cortex_core.domain.tools import ToolSpec

PROMPT = [PromptMessage("user", "hello there")]
NO_WAIT = Backoff(initial=0.001, maximum=0.001, jitter=0.0)
REPLY = (
    Chunk(text="Hi"),
    Chunk(text="!"),
    Chunk(usage=Usage(3, 2)),
    Chunk(finish=FinishReason.STOP),
)


class Scripted:
    """A provider answering each call with the next outcome: chunks, then maybe an error."""

    def __init__(self, name: str, *outcomes: tuple[Sequence[Chunk], str | None]) -> None:
        self._name = name
        self.outcomes = deque(outcomes)
        self.calls: list[float] = []
        self.closed = 0

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return f"{self._name}-model"

    async def stream(
        self, messages: Sequence[PromptMessage], *, max_tokens: int, tools: Sequence[ToolSpec] = ()
    ) -> AsyncGenerator[Chunk, None]:
        self.calls.append(time.monotonic())
        chunks, reason = self.outcomes.popleft() if self.outcomes else (REPLY, None)
        started = False
        try:
            for chunk in chunks:
                await asyncio.sleep(0)
                started = started or bool(chunk.text)
                yield chunk
            if reason == "HANG":
                await asyncio.Event().wait()
            if reason:
                raise ProviderError(
                    reason,
                    f"{reason} from {self._name}",
                    provider=self._name,
                    before_first_token=not started,
                )
        finally:
            self.closed += 1


def fails(reason: str = "PROVIDER_UNAVAILABLE") -> tuple[Sequence[Chunk], str | None]:
    return ((), reason)


async def collect(provider: FallbackProvider) -> list[Chunk]:
    return [c async for c in provider.stream(PROMPT, max_tokens=50)]


def served(name: str, chunks: Sequence[Chunk]) -> list[Chunk]:
    """``chunks`` as the chain yields them when provider ``name`` served them."""
    return [dataclasses.replace(c, provider=name, model=f"{name}-model") for c in chunks]


def test_backoff_doubles_from_its_first_delay_up_to_its_maximum() -> None:
    backoff = Backoff(initial=0.1, multiplier=2, maximum=0.5, jitter=0)

    assert [backoff.delay(n) for n in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_backoff_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, jitter=0.1)

    delays = [backoff.delay(0) for _ in range(200)]

    assert all(0.9 <= d <= 1.1 for d in delays)
    assert len(set(delays)) > 1


async def test_retries_of_one_provider_wait_longer_each_time() -> None:
    flaky = Scripted("a", fails(), fails(), fails())
    chain = FallbackProvider(
        [flaky, Scripted("b")], retries=2, backoff=Backoff(initial=0.05, maximum=1, jitter=0)
    )

    await collect(chain)

    first, second = (b - a for a, b in zip(flaky.calls, flaky.calls[1:], strict=False))
    assert first >= 0.05
    assert second >= 0.1
    assert flaky.closed == 3


async def test_nothing_from_a_failed_attempt_reaches_the_caller() -> None:
    half = Scripted("a", ([Chunk(usage=Usage(9, 0))], "PROVIDER_STREAM_TRUNCATED"))
    chain = FallbackProvider([half], retries=1, backoff=NO_WAIT)

    assert await collect(chain) == served("a", REPLY)


async def test_an_empty_reply_still_gives_its_usage_and_finish() -> None:
    empty = Scripted("a", ([Chunk(usage=Usage(4, 0)), Chunk(finish=FinishReason.STOP)], None))

    assert await collect(FallbackProvider([empty])) == served(
        "a",
        [
            Chunk(usage=Usage(4, 0)),
            Chunk(finish=FinishReason.STOP),
        ],
    )


async def test_an_unexpected_exception_is_not_mistaken_for_a_provider_failure() -> None:
    class Broken(Scripted):
        async def stream(
            self,
            messages: Sequence[PromptMessage],
            *,
            max_tokens: int,
            tools: Sequence[ToolSpec] = (),
        ) -> AsyncGenerator[Chunk, None]:
            raise RuntimeError("a bug")
            yield Chunk()

    chain = FallbackProvider([Broken("a"), Scripted("b")])

    with pytest.raises(RuntimeError):
        await collect(chain)
    assert chain.states()["a"] == "closed"


async def test_the_local_provider_answers_when_every_real_provider_is_down() -> None:
    chain = FallbackProvider(
        [Scripted("a", fails("PROVIDER_UNREACHABLE")), LocalDevelopmentProvider()],
        retries=0,
    )

    chunks = await collect(chain)

    assert "".join(c.text for c in chunks).startswith("[local-dev reply]")
    assert {(c.provider, c.model) for c in chunks} == {("local-dev", "cortex-local-dev")}


async def test_each_concurrent_replys_chunks_name_the_provider_that_served_it() -> None:
    a = Scripted("a", fails("PROVIDER_AUTH_FAILED"))
    chain = FallbackProvider([a, Scripted("b")], retries=0)

    async def served_by() -> set[tuple[str, str]]:
        return {(c.provider, c.model) for c in await collect(chain)}

    first, second = await asyncio.gather(served_by(), served_by())

    assert [first, second] in (
        [{("a", "a-model")}, {("b", "b-model")}],
        [{("b", "b-model")}, {("a", "a-model")}],
    )
    assert chain.name == "a"  # the chain itself names its first provider


async def test_a_bad_request_does_not_count_against_the_providers_circuit() -> None:
    a = Scripted("a", *[fails("PROVIDER_BAD_REQUEST")] * 5)
    chain = FallbackProvider(
        [a, Scripted("b")], retries=0, breaker=BreakerPolicy(failure_threshold=2)
    )

    for _ in range(5):
        await collect(chain)

    assert chain.states()["a"] == "closed"
    assert len(a.calls) == 5


async def test_every_provider_skipped_by_its_circuit_is_unavailable_until_a_probe() -> None:
    now = [0.0]
    chain = FallbackProvider(
        [Scripted("a", fails())],
        retries=0,
        breaker=BreakerPolicy(failure_threshold=1, reset_after=30),
        monotonic=lambda: now[0],
    )
    with pytest.raises(ProviderFailure):
        await collect(chain)
    now[0] = 12.0

    with pytest.raises(ProviderFailure) as caught:
        await collect(chain)

    assert caught.value.reason == "NO_PROVIDER_AVAILABLE"
    assert caught.value.errors == ()
    assert "skipped while failing: a" in caught.value.message
    assert caught.value.retry_after == 18.0


async def test_a_failure_after_text_is_raised_after_that_text() -> None:
    cut = Scripted("a", ([Chunk(text="Par"), Chunk(text="tial")], "PROVIDER_UNREACHABLE"))
    chain = FallbackProvider([cut, Scripted("b")])
    seen: list[str] = []

    with pytest.raises(ProviderFailure) as caught:
        async for chunk in chain.stream(PROMPT, max_tokens=5):
            seen.append(chunk.text)

    assert seen == ["Par", "tial"]
    assert caught.value.reason == "PROVIDER_FAILED"
    assert caught.value.metadata == {"provider": "a"}


def test_half_open_lets_one_probe_through_at_a_time() -> None:
    now = [0.0]
    breaker = CircuitBreaker("a", BreakerPolicy(failure_threshold=2, reset_after=5), lambda: now[0])
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.try_acquire()

    now[0] = 5.0
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.try_acquire()
    assert not breaker.try_acquire()  # the probe is in flight
    breaker.release()  # it was cancelled: no verdict
    assert breaker.try_acquire()
    breaker.record_success()

    assert breaker.state is BreakerState.CLOSED
    assert breaker.try_acquire()


async def test_a_cancelled_probe_leaves_the_circuit_ready_for_the_next_probe() -> None:
    now = [0.0]
    a = Scripted("a", fails(), ([Chunk()], "HANG"))
    chain = FallbackProvider(
        [a, Scripted("b")],
        retries=0,
        breaker=BreakerPolicy(failure_threshold=1, reset_after=1),
        monotonic=lambda: now[0],
    )
    await collect(chain)
    now[0] = 1.0
    task = asyncio.create_task(collect(chain))
    while len(a.calls) < 2:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert chain.states()["a"] == "half_open"
    assert a.closed == 2
    await collect(chain)
    assert chain.states()["a"] == "closed"


def test_provider_names_in_a_chain_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        FallbackProvider([Scripted("a"), Scripted("a")])
