"""The bounded tool loop: one mechanism for every model that may call tools (a
reply in a conversation now, an expert's task next).

:meth:`ToolLoop.run` is an async generator of typed steps. Per step the model
streams text (:class:`TextPiece`) and tool calls; when it stops to call tools
the step ends with a :class:`ModelTurn` (its text and calls, each call's state
decided), then the calls run concurrently, at most ``limits.parallel`` at once,
and each result comes as a :class:`CallResult` (in the order they finish) and
goes back to the model as a ``tool`` message. The loop ends with exactly one
:class:`LoopFinished` saying why:

* the model stopped (``STOP``, ``LENGTH``);
* the model called a tool that ``requires_approval`` (``APPROVAL_REQUIRED``):
  those calls stay ``PENDING_APPROVAL`` and do not run; the other calls of the
  same step run first, so only what needs a person waits for one;
* ``limits.max_steps`` model turns ended with tool calls (``STEP_LIMIT``; the
  last turn's calls still run, so every stored call has its result);
* the provider failed (``ERROR``, with the error: ``NO_PROVIDER_AVAILABLE``
  when nothing was generated yet, else ``PROVIDER_FAILED`` or the provider's
  own reason).

Calls are checked before they run: a tool not in ``allowed`` gets a
TOOL_NOT_ALLOWED result and one allowed but not offered by any source now gets
TOOL_UNAVAILABLE; neither reaches a server. Every other outcome is the
invoker's :class:`~cortex_core.domain.tools.ToolResult` (it never raises for
the tool's own failure).

The consumer decides what to store between steps: the generator is suspended
while it handles one, but calls already running keep running. Closing the
generator, or cancelling the task iterating it, cancels every running call
(the invoker's source stops it on its server) and waits for them to end before
it returns; nothing is left running. ``usage`` is the running sum over steps
(the provider's counts when it reports them, estimates otherwise).

Two things the caller may pass to :meth:`ToolLoop.run`: ``deadline`` (the
event loop's clock time by which every tool call must have ended: each call
gets ``time_left`` up to it, so a call that would outlive the caller ends as
TOOL_TIMEOUT, told to the model, instead of taking the caller down), and
``idle`` (seconds: while the loop waits for tool results and has yielded
nothing for that long, it yields an :class:`Idle`, so a stream can send a
heartbeat frame; None, the default, never yields one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncGenerator, Collection, Sequence

from cortex_core import errors
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.identity import new_id
from cortex_core.domain.llm import PromptMessage, Usage, tool_message
from cortex_core.domain.tools import (
    ToolCall,
    ToolCallState,
    ToolContext,
    ToolResult,
    ToolSpec,
    failed_result,
)
from cortex_core.ports import LlmProvider, TokenCounter
from cortex_core.services.tool_invoker import ToolInvoker

log = logging.getLogger(__name__)

DEFAULT_MAX_STEPS = 8
DEFAULT_PARALLEL = 4


@dataclasses.dataclass(frozen=True, slots=True)
class LoopLimits:
    max_steps: int = DEFAULT_MAX_STEPS  # model turns that may end with tool calls
    parallel: int = DEFAULT_PARALLEL  # calls of one turn running at once


@dataclasses.dataclass(frozen=True, slots=True)
class TextPiece:
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class ModelTurn:
    """A model turn that ended by calling tools. ``finish`` is TOOL_CALLS, or
    APPROVAL_REQUIRED when some ``calls`` are PENDING_APPROVAL (the loop ends
    after the others have run)."""

    text: str
    calls: tuple[ToolCall, ...]
    finish: FinishReason
    usage: Usage  # this turn's


@dataclasses.dataclass(frozen=True, slots=True)
class CallResult:
    result: ToolResult


@dataclasses.dataclass(frozen=True, slots=True)
class LoopFinished:
    finish: FinishReason
    usage: Usage  # the last turn's
    error: errors.CortexError | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Idle:
    """Nothing happened for ``idle`` seconds while tool calls run."""


IDLE = Idle()

LoopStep = TextPiece | ModelTurn | CallResult | LoopFinished | Idle


class ToolLoop:
    """One run of the loop (make one per reply or task)."""

    def __init__(
        self,
        *,
        provider: LlmProvider,
        invoker: ToolInvoker,
        counter: TokenCounter,
        limits: LoopLimits,
        max_tokens: int,
    ) -> None:
        self._provider = provider
        self._invoker = invoker
        self._counter = counter
        self._limits = limits
        self._max_tokens = max_tokens
        self.usage = Usage(0, 0)
        self.provider = provider.name
        self.model = provider.model
        self.generated = 0  # text pieces streamed over every turn

    async def run(
        self,
        prompt: Sequence[PromptMessage],
        *,
        allowed: Collection[str],
        context: ToolContext,
        resume: Sequence[ToolCall] = (),
        deadline: float | None = None,
        idle: float | None = None,
    ) -> AsyncGenerator[LoopStep, None]:
        """The steps of the loop over ``prompt``, calling only tools in ``allowed``.

        ``resume``: calls of the prompt's last assistant message that were
        decided (approved) and have no result yet; they run first, before the
        model is asked again. ``deadline`` and ``idle``: see the module."""
        messages = list(prompt)
        calling = _Calling(allowed, context, deadline, idle)
        if resume:
            async with contextlib.aclosing(self._answer(resume, calling)) as results:
                async for step in results:
                    if isinstance(step, CallResult):
                        messages.append(tool_message(step.result))
                    yield step
        turns = 0
        while True:
            offered = [t for t in map(self._invoker.get, allowed) if t is not None]
            turn = _Turn()
            async with contextlib.aclosing(self._turn(messages, offered, turn)) as pieces:
                async for piece in pieces:
                    yield piece
            if turn.error is not None or not turn.calls:
                # TOOL_CALLS with no call is a provider's slip: the model did stop.
                stopped = (
                    FinishReason.STOP if turn.finish is FinishReason.TOOL_CALLS else turn.finish
                )
                yield LoopFinished(stopped, turn.usage, turn.error)
                return
            turns += 1
            calls = self._decide(turn.calls, offered)
            pending = any(c.state is ToolCallState.PENDING_APPROVAL for c in calls)
            finish = FinishReason.APPROVAL_REQUIRED if pending else FinishReason.TOOL_CALLS
            yield ModelTurn("".join(turn.text), calls, finish, turn.usage)
            messages.append(PromptMessage("assistant", "".join(turn.text), tool_calls=calls))
            runnable = [c for c in calls if c.state is ToolCallState.CALLED]
            async with contextlib.aclosing(self._answer(runnable, calling)) as results:
                async for step in results:
                    if isinstance(step, CallResult):
                        messages.append(tool_message(step.result))
                    yield step
            if pending:
                yield LoopFinished(FinishReason.APPROVAL_REQUIRED, turn.usage)
                return
            if turns >= self._limits.max_steps:
                yield LoopFinished(FinishReason.STEP_LIMIT, turn.usage)
                return

    async def _turn(
        self, messages: list[PromptMessage], offered: Sequence[ToolSpec], turn: _Turn
    ) -> AsyncGenerator[TextPiece, None]:
        """Stream one model turn into ``turn`` (text, calls, finish, usage, error)."""
        # As stored: an adapter whose API has rules about tool history applies
        # domain.llm.well_formed (the one rule for dangling calls and results).
        prompt = tuple(messages)
        reported: Usage | None = None
        try:
            stream = self._provider.stream(prompt, max_tokens=self._max_tokens, tools=offered)
            async with contextlib.aclosing(stream) as chunks:
                async for chunk in chunks:
                    if chunk.provider:
                        self.provider, self.model = chunk.provider, chunk.model
                    if chunk.text:
                        turn.text.append(chunk.text)
                        self.generated += 1
                        yield TextPiece(chunk.text)
                    turn.calls.extend(chunk.tool_calls)
                    if chunk.usage is not None:
                        reported = chunk.usage
                    if chunk.finish is not None:
                        turn.finish = chunk.finish
        except Exception as exc:  # the provider's failure ends the loop explicitly
            log.warning("model turn failed", exc_info=exc)
            turn.finish, turn.calls = FinishReason.ERROR, []
            if isinstance(exc, errors.CortexError):
                turn.error = exc
            elif self.generated:
                turn.error = errors.Unavailable(
                    "the model failed while replying", reason="PROVIDER_FAILED"
                )
            else:
                turn.error = errors.Unavailable(
                    "no model provider is available", reason="NO_PROVIDER_AVAILABLE"
                )
        finally:
            turn.usage = reported or Usage(
                sum(self._counter.count(m.content) for m in prompt),
                self._counter.count("".join(turn.text)),
            )
            self.usage = Usage(
                self.usage.prompt_tokens + turn.usage.prompt_tokens,
                self.usage.completion_tokens + turn.usage.completion_tokens,
            )

    def _decide(
        self, calls: Sequence[ToolCall], offered: Sequence[ToolSpec]
    ) -> tuple[ToolCall, ...]:
        """Give every call a unique id and its state: PENDING_APPROVAL for a tool
        that requires approval, CALLED for everything else (refused calls too:
        they are answered with an error result, never left waiting)."""
        specs = {t.id: t for t in offered}
        seen: set[str] = set()
        decided = []
        for call in calls:
            call_id = call.id if call.id and call.id not in seen else f"call_{new_id()}"
            seen.add(call_id)
            spec = specs.get(call.tool)
            needs = spec is not None and spec.requires_approval
            state = ToolCallState.PENDING_APPROVAL if needs else ToolCallState.CALLED
            decided.append(dataclasses.replace(call, id=call_id, state=state))
        return tuple(decided)

    async def _answer(
        self, calls: Sequence[ToolCall], calling: _Calling
    ) -> AsyncGenerator[CallResult | Idle, None]:
        """Run ``calls`` at most ``limits.parallel`` at once; results as they finish,
        an :data:`IDLE` whenever ``calling.idle`` seconds pass with none.

        Closing this generator cancels every call still running and waits for it."""
        gate = asyncio.Semaphore(self._limits.parallel)
        finished: asyncio.Queue[ToolResult] = asyncio.Queue()

        async def one(call: ToolCall) -> None:
            async with gate:
                result = await self._call(call, calling)
            finished.put_nowait(result)

        tasks = [asyncio.ensure_future(one(call)) for call in calls]
        try:
            for _ in tasks:
                while True:
                    try:
                        async with asyncio.timeout(calling.idle):  # None: no limit
                            result = await finished.get()
                    except TimeoutError:
                        yield IDLE
                        continue
                    break
                yield CallResult(result)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _call(self, call: ToolCall, calling: _Calling) -> ToolResult:
        if call.tool not in calling.allowed:
            return failed_result(
                call, "TOOL_NOT_ALLOWED", f"tool {call.tool!r} is not enabled for this conversation"
            )
        if self._invoker.get(call.tool) is None:
            return failed_result(
                call, "TOOL_UNAVAILABLE", f"tool {call.tool!r} is not available now"
            )
        time_left = None
        if calling.deadline is not None:
            time_left = max(0.0, calling.deadline - asyncio.get_running_loop().time())
        try:
            return await self._invoker.run(call, calling.context, time_left=time_left)
        except Exception:  # a defect in a source: answered, never a hung loop
            log.exception("tool call failed unexpectedly", extra={"tool": call.tool})
            return failed_result(call, "TOOL_FAILED", "the tool failed")


@dataclasses.dataclass(frozen=True, slots=True)
class _Calling:
    """What every call of one run is made with."""

    allowed: Collection[str]
    context: ToolContext
    deadline: float | None
    idle: float | None


@dataclasses.dataclass(slots=True)
class _Turn:
    text: list[str] = dataclasses.field(default_factory=list)
    calls: list[ToolCall] = dataclasses.field(default_factory=list)
    finish: FinishReason = FinishReason.STOP
    usage: Usage = dataclasses.field(default_factory=lambda: Usage(0, 0))
    error: errors.CortexError | None = None
