"""A chain of providers that behaves as one: retries, fallback and circuit breakers.

Rules, for one reply:

* A provider that fails before its first token (text or a tool call) with a
  retryable error (connection, timeout, 429, 5xx, truncated stream) is tried again
  after an exponential backoff (``retries`` times, waiting at least its
  ``Retry-After`` unless that is longer than the backoff's maximum, in which case
  the chain moves on at once). A non-retryable error (bad key, unknown model, bad
  request) moves on at once.
* Then the next provider takes over. Nothing of a failed attempt reaches the caller.
* A failure after text or a tool call has been streamed cannot be hidden:
  ``stream`` raises :class:`ProviderFailure` (``PROVIDER_FAILED``,
  ``before_first_token`` False) after what it already yielded. It never ends the
  stream silently, and never asks another provider, which could repeat the text
  or make the same tool call a second time.
* When no provider produced a first token, ``stream`` raises :class:`ProviderFailure`
  (``NO_PROVIDER_AVAILABLE``) before yielding anything.
* Each provider has a :class:`~cortex_core.adapters.circuit.CircuitBreaker` (the
  project's one breaker): ``failure_threshold`` failed attempts in a row open it and
  the chain skips that provider; after ``reset_after`` seconds it is half-open and
  one request probes it (success closes it, failure re-opens).
  :meth:`FallbackProvider.states` reports every breaker, for health.

Every chunk names the provider and model that produced it (``Chunk.provider``,
``Chunk.model``), so a reply knows who served it whatever task reads it;
``name`` and ``model`` name the first provider of the chain.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
import typing
from collections.abc import AsyncGenerator, Callable, Sequence

from cortex_core.adapters.circuit import BreakerPolicy, BreakerState, CircuitBreaker
from cortex_core.adapters.llm.errors import ProviderError, ProviderFailure
from cortex_core.domain.llm import Chunk, PromptMessage
from cortex_core.domain.tools import ToolSpec
from cortex_core.ports import LlmProvider, Metrics
from cortex_core.services.telemetry import no_tracer

if typing.TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("cortex_core.llm")


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``initial * multiplier**attempt``, capped, with jitter."""

    initial: float = 0.25
    multiplier: float = 2.0
    maximum: float = 4.0
    jitter: float = 0.1  # a fraction of the delay, either way

    def delay(self, attempt: int) -> float:
        """The wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        return min(self.maximum, base * (1 + random.uniform(-self.jitter, self.jitter)))


class FallbackProvider:
    """An :class:`~cortex_core.ports.LlmProvider` over several, tried in order.

    ``stream`` raises :class:`ProviderFailure` only (provider errors are absorbed
    or wrapped); ``asyncio.CancelledError`` and closing the iterator pass through
    and close the provider's stream at once.
    """

    def __init__(
        self,
        providers: Sequence[LlmProvider],
        *,
        retries: int = 2,
        backoff: Backoff | None = None,
        breaker: BreakerPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        tracer: Tracer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"provider names must be unique, got {', '.join(names)}")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self._providers = tuple(providers)
        self._retries = retries
        self._backoff = backoff or Backoff()
        policy = breaker or BreakerPolicy()
        self._breakers = {name: CircuitBreaker(name, policy, monotonic) for name in names}
        self._tracer = tracer or no_tracer()
        self._metrics = metrics

    @property
    def providers(self) -> tuple[LlmProvider, ...]:
        return self._providers

    @property
    def name(self) -> str:
        return self._providers[0].name

    @property
    def model(self) -> str:
        return self._providers[0].model

    def states(self) -> dict[str, str]:
        """Each provider's circuit state (``closed``, ``open``, ``half_open``), in order."""
        states = {name: breaker.state.value for name, breaker in self._breakers.items()}
        if self._metrics is not None:
            for name, state in states.items():
                self._metrics.breaker_state(name, state)
        return states

    async def aclose(self) -> None:
        """Close every provider that holds connections (at shutdown)."""
        for provider in self._providers:
            if isinstance(provider, _Closeable):
                await provider.aclose()

    async def stream(
        self,
        messages: Sequence[PromptMessage],
        *,
        max_tokens: int,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[Chunk, None]:
        failed: list[ProviderError] = []
        skipped: list[str] = []
        for provider in self._providers:
            breaker = self._breakers[provider.name]
            for attempt in range(self._retries + 1):
                if not breaker.try_acquire():
                    if attempt == 0:
                        skipped.append(provider.name)
                    break
                error: ProviderError | None = None
                started = False
                settled = False
                pending: list[Chunk] = []
                inner = provider.stream(messages, max_tokens=max_tokens, tools=tools)
                name, model = provider.name, provider.model
                attempt_span = _Attempt(self._tracer, self._metrics, name, model, attempt)
                try:
                    async for chunk in inner:
                        if chunk.usage is not None:
                            attempt_span.usage(chunk)
                        if not started and not chunk.text and not chunk.tool_calls:
                            pending.append(chunk)  # usage/finish of an empty reply
                            continue
                        if not started:
                            started = settled = True
                            _record_success(breaker)
                            attempt_span.first_token()
                        yield dataclasses.replace(chunk, provider=name, model=model)
                    if not started:
                        settled = True
                        _record_success(breaker)
                        for chunk in pending:
                            yield dataclasses.replace(chunk, provider=name, model=model)
                    attempt_span.end("ok")
                    return
                except ProviderError as exc:
                    attempt_span.end(exc.reason)
                    settled = True
                    if exc.provider_fault:
                        _record_failure(breaker)
                    else:
                        breaker.release()
                    if started:
                        log.warning(
                            "LLM provider %s failed mid-reply (%s)", provider.name, exc.reason
                        )
                        raise ProviderFailure(
                            "PROVIDER_FAILED",
                            f"The reply was interrupted: {exc.message}",
                            provider=provider.name,
                            before_first_token=False,
                            errors=(*failed, exc),
                        ) from None
                    error = exc
                finally:
                    attempt_span.end("cancelled")  # no-op when it has ended
                    if not settled:
                        breaker.release()
                    await inner.aclose()
                assert error is not None  # the only way here: the normal path returned
                failed.append(error)
                log.warning(
                    "LLM provider %s failed before the first token (%s), attempt %d",
                    provider.name,
                    error.reason,
                    attempt + 1,
                )
                delay = self._retry_delay(error, attempt)
                if delay is None:
                    break
                await asyncio.sleep(delay)
        hints = [self._breakers[name].time_to_probe() for name in skipped]
        hints += [e.retry_after for e in failed if e.retry_after is not None]
        raise ProviderFailure(
            "NO_PROVIDER_AVAILABLE",
            _unavailable_message(failed, skipped),
            provider=failed[-1].provider if failed else "",
            before_first_token=True,
            errors=tuple(failed),
            retry_after=min(hints) if hints else None,
        )

    def _retry_delay(self, error: ProviderError, attempt: int) -> float | None:
        """How long to wait before retrying the same provider; None to move on."""
        if not error.retryable or attempt >= self._retries:
            return None
        delay = self._backoff.delay(attempt)
        if error.retry_after is not None:
            if error.retry_after > self._backoff.maximum:
                return None  # another provider will answer sooner
            delay = max(delay, error.retry_after)
        return delay


class _Attempt:
    """One provider attempt's span (``llm.attempt``: provider, model, attempt,
    tokens, outcome) and metrics. Not made current: the attempt's stream yields
    to the caller between chunks, and a span made current in a generator would
    leak into the caller's context."""

    __slots__ = ("_metrics", "_provider", "_span", "_start", "_ttft")

    def __init__(
        self, tracer: Tracer, metrics: Metrics | None, provider: str, model: str, attempt: int
    ) -> None:
        self._span: Span | None = tracer.start_span(
            "llm.attempt",
            attributes={
                "gen_ai.system": provider,
                "gen_ai.request.model": model,
                "cortex.llm.attempt": attempt + 1,
            },
        )
        self._metrics = metrics
        self._provider = provider
        self._start = time.perf_counter()
        self._ttft: float | None = None

    def first_token(self) -> None:
        self._ttft = time.perf_counter() - self._start
        if self._span is not None:
            self._span.add_event("first_token")

    def usage(self, chunk: Chunk) -> None:
        usage = chunk.usage
        assert usage is not None
        if self._span is not None:
            self._span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            self._span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if self._metrics is not None:
            self._metrics.model_tokens(self._provider, "input", usage.prompt_tokens)
            self._metrics.model_tokens(self._provider, "output", usage.completion_tokens)

    def end(self, outcome: str) -> None:
        span, self._span = self._span, None
        if span is None:
            return
        span.set_attribute("outcome", outcome)
        if outcome not in ("ok", "cancelled"):
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, outcome))
        span.end()
        if self._metrics is not None:
            self._metrics.model_attempt(self._provider, outcome, self._ttft)


def _record_success(breaker: CircuitBreaker) -> None:
    if breaker.record_success():
        log.info("LLM provider %s recovered; circuit closed", breaker.name)


def _record_failure(breaker: CircuitBreaker) -> None:
    if breaker.record_failure():
        log.warning(
            "LLM provider %s failed %d times in a row; circuit open for %.1f s",
            breaker.name,
            breaker.failures,
            breaker.reset_after,
        )


@typing.runtime_checkable
class _Closeable(typing.Protocol):
    async def aclose(self) -> None: ...


def _unavailable_message(failed: Sequence[ProviderError], skipped: Sequence[str]) -> str:
    parts = []
    tried = list(dict.fromkeys(e.provider for e in failed))
    if tried:
        parts.append(f"failed: {', '.join(tried)}")
    if skipped:
        parts.append(f"skipped while failing: {', '.join(skipped)}")
    return f"No language-model provider could answer ({'; '.join(parts)})."


__all__ = [
    "Backoff",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "FallbackProvider",
    "ProviderError",
    "ProviderFailure",
]
