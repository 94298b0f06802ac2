"""The task runner: machinery that claims tasks from the task table and runs them.

One runner per process, with up to ``workers`` attempts at once. Its supervised
loops (``cortex.background.tasks`` and ``cortex.background.task-sweeper``):

* **Dispatch** (:meth:`TaskRunner.run`): while a worker slot is free, claim the
  oldest claimable task (``TaskRepository.claim_next``: queued and due, or
  running with an expired lease) and start its attempt; with nothing to claim,
  wait for a wake-up (``TaskSignals``, from any replica) or ``poll`` seconds. A
  database outage makes the claim raise: the supervisor backs off and calls it
  again, while attempts already running carry on by themselves.
* **An attempt** holds a lease (``lease_owner``, ``lease_until``) renewed by a
  heartbeat every ``heartbeat`` seconds; the heartbeat is also the database
  poll for a cancel, beside the cancel signal. Every write of the attempt is
  fenced on the lease (worker and attempt number), so a worker that lost its
  lease writes nothing more; and an attempt whose heartbeat cannot reach the
  database stops itself before its lease runs out, so a task never runs on two
  workers at once. Output text is journaled coalesced (every
  :data:`FLUSH_INTERVAL`), tool calls and results as they happen.
* **Outcomes.** SUCCEEDED with the output; a retryable failure (the provider
  unavailable, ATTEMPT_TIMEOUT, WORKER_LOST, OUTPUT_SCHEMA_MISMATCH) back to
  QUEUED after an exponential backoff with jitter while failed attempts are
  fewer than ``max_attempts``, else FAILED; INPUT_REQUIRED (a tool that
  requires approval, or the expert asking) stores the request and frees the
  worker; a cancel stops the model stream and the tool calls (closing the loop)
  and ends CANCELLED, never SUCCEEDED afterwards.
* **Drain** (:meth:`drain`, at SIGTERM): no more claims; running attempts get
  until the deadline, then are handed back (QUEUED at once, lease released,
  the attempt marked WORKER_SHUTDOWN and not counted as a failure).
* **Sweeper** (:meth:`sweep`): fails tasks whose input request expired
  (INPUT_REQUEST_EXPIRED) and deletes terminal tasks older than the retention.

Internal jobs (``TaskKind.SUMMARY``) run through the same claims, leases and
retries, with a :data:`JobHandler` instead of the tool loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from opentelemetry.trace import Tracer

from cortex_core import errors
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.identity import new_id
from cortex_core.domain.llm import PromptMessage, tool_message
from cortex_core.domain.tasks import (
    APPROVAL_SCHEMA,
    WORKER_LOST,
    WORKER_SHUTDOWN,
    ErrorCategory,
    Expert,
    InputRequest,
    JournalDraft,
    JournalKind,
    Progress,
    Task,
    TaskAttempt,
    TaskError,
    TaskKind,
    TaskState,
    TranscriptEntry,
    approval_message,
    decided_call,
    frozen,
)
from cortex_core.domain.tools import ToolCall, ToolCallState, ToolContext, failed_result
from cortex_core.ports import Clock, Metrics, TaskSignals, TokenCounter, UnitOfWorkFactory
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.experts import ExpertCatalog
from cortex_core.services.json_schemas import check_schema, violations
from cortex_core.services.tasks import announce, commit_change, write_change
from cortex_core.services.telemetry import links_to, no_tracer, start_span
from cortex_core.services.tool_invoker import ToolInvoker
from cortex_core.services.tool_loop import (
    CallResult,
    LoopFinished,
    LoopLimits,
    ModelTurn,
    TextPiece,
    ToolLoop,
)

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.2  # seconds: output text is journaled coalesced this often
MAX_TASK_TOKENS = 2048  # completion tokens per model turn
SWEEP_BATCH = 100
PERSIST_BACKOFF = (0.2, 5.0)  # seconds: a final write retried through an outage
LEASE_MARGIN = 0.2  # of the lease: an attempt that cannot renew stops this early
DENIED = "denied by the user"

JobHandler = Callable[[Task], Awaitable[Mapping[str, Any]]]
"""Runs an internal job; returns its output. Raising ``errors.Unavailable`` or
``errors.DeadlineExceeded`` is retried, any other ``CortexError`` fails the job."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunnerPolicy:
    workers: int = 4
    lease: float = 15.0  # seconds a claim holds without a heartbeat
    heartbeat: float = 1.0  # seconds between lease renewals (and cancel polls)
    poll: float = 1.0  # seconds an idle dispatcher waits without a wake-up
    retry_initial: float = 1.0  # seconds before the first retry; doubled per failure
    retry_max: float = 60.0
    input_ttl: float = 24 * 3600.0  # seconds an input request waits for its answer
    retention: float = 7 * 24 * 3600.0  # seconds terminal tasks are kept
    parallel_tools: int = 4
    workspace_running: int = 0  # running expert tasks per workspace, every replica (0: no cap)


# --- what an attempt ends with --------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Succeeded:
    output: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class _Failed:
    error: TaskError
    retryable: bool


@dataclasses.dataclass(frozen=True, slots=True)
class _NeedsInput:
    request: InputRequest


_Outcome = _Succeeded | _Failed | _NeedsInput


def _failure(error: errors.CortexError) -> _Failed:
    retryable = isinstance(error, errors.Unavailable | errors.DeadlineExceeded)
    return _Failed(TaskError.of(error), retryable)


class _Stop(Exception):
    """Why the attempt's work was stopped from outside."""


@dataclasses.dataclass(slots=True)
class _Attempt:
    """A running attempt: the task as last written (its fence) and what it has
    produced but not journaled yet."""

    task: Task
    pending: list[JournalDraft] = dataclasses.field(default_factory=list)
    stop: asyncio.Future[str] | None = None  # "cancel", "lost" or "handback"
    renewed_until: datetime | None = None
    text: list[str] = dataclasses.field(default_factory=list)  # every word it streamed
    outcome: str = ""  # how it ended, once written (the metrics' and span's outcome)

    @property
    def number(self) -> int:
        return self.task.attempt_count

    def add(self, kind: JournalKind, body: Any) -> None:
        last = self.pending[-1] if self.pending else None
        if kind is JournalKind.OUTPUT_DELTA and last and last.kind is JournalKind.OUTPUT_DELTA:
            assert isinstance(last.body, str)
            self.pending[-1] = JournalDraft(kind, self.number, last.body + str(body))
        else:
            self.pending.append(JournalDraft(kind, self.number, body))


class TaskRunner:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        events: EventBus,
        signals: TaskSignals,
        experts: ExpertCatalog,
        invoker: ToolInvoker,
        counter: TokenCounter,
        worker_id: str,
        policy: RunnerPolicy,
        jobs: Mapping[TaskKind, JobHandler] | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events
        self._signals = signals
        self._experts = experts
        self._invoker = invoker
        self._counter = counter
        self.worker_id = worker_id
        self.policy = policy
        self._jobs = dict(jobs or {})
        self._metrics = metrics
        self._tracer = tracer or no_tracer()
        self._kinds = [TaskKind.EXPERT, *self._jobs]
        self._slots = asyncio.Semaphore(policy.workers)
        self._running: dict[str, tuple[_Attempt, asyncio.Task[None]]] = {}
        self._draining = False

    def add_job(self, kind: TaskKind, handler: JobHandler) -> None:
        """Run internal jobs of ``kind`` with ``handler`` (before the runner starts)."""
        self._jobs[kind] = handler
        self._kinds = [TaskKind.EXPERT, *self._jobs]

    @property
    def running(self) -> int:
        return len(self._running)

    # --- dispatch --------------------------------------------------------------------

    async def run(self) -> None:
        """The dispatch loop (never returns; a database outage raises, for the
        supervisor to back off)."""
        while True:
            await self._slots.acquire()
            started = False
            try:
                if self._draining:
                    await asyncio.Event().wait()  # no claims while draining
                claimed = await self._claim()
                if isinstance(claimed, _Attempt):
                    self._start(claimed)  # the slot goes with the attempt
                    started = True
                    continue
            finally:
                if not started:
                    self._slots.release()
            if claimed is _NOTHING:
                await self._signals.wait_for_work(self.policy.poll)

    def _start(self, attempt: _Attempt) -> None:
        task_id = attempt.task.id
        attempt.stop = asyncio.get_running_loop().create_future()
        running = asyncio.create_task(
            self._attempt(attempt), name=f"task:{self.worker_id}:{task_id}"
        )
        self._running[task_id] = (attempt, running)
        if self._draining:  # claimed while the drain began: give it straight back
            _set(attempt.stop, "handback")

        def done(finished: asyncio.Task[None]) -> None:
            self._running.pop(task_id, None)
            self._slots.release()
            if not finished.cancelled() and finished.exception() is not None:
                log.error("task attempt crashed", exc_info=finished.exception())

        running.add_done_callback(done)

    async def _claim(self) -> _Attempt | object | None:
        """A started attempt; ``_NOTHING`` when nothing is claimable; None when
        the claim lost a race (claim again at once)."""
        now = self._clock.now()
        async with self._uow() as uow:
            task = await uow.tasks.claim_next(
                now, self._kinds, running_limit=self.policy.workspace_running
            )
            if task is None:
                return _NOTHING
            attempts = task.attempts
            lost = task.state is TaskState.RUNNING
            lost_error = TaskError(
                ErrorCategory.UNAVAILABLE,
                WORKER_LOST,
                "the worker running this attempt stopped renewing its lease",
            )
            if lost:
                attempts = task.ended_attempt(now, lost_error)
            interim = dataclasses.replace(task, attempts=attempts)
            expert = self._experts.find(task.expert_id) if task.kind is TaskKind.EXPERT else None
            if lost and task.cancel_requested:
                after = interim.moved(TaskState.CANCELLED, now)
            elif lost and interim.failed_attempts >= task.max_attempts:
                after = interim.moved(TaskState.FAILED, now, error=lost_error)
            elif task.kind is TaskKind.EXPERT and expert is None:
                gone = errors.FailedPrecondition(
                    f"expert {task.expert_id!r} is no longer configured", reason="EXPERT_NOT_FOUND"
                )
                after = interim.moved(TaskState.FAILED, now, error=TaskError.of(gone))
            else:
                after = interim.moved(
                    TaskState.RUNNING,
                    now,
                    attempts=(*attempts, TaskAttempt(len(attempts) + 1, now, self.worker_id)),
                    lease_owner=self.worker_id,
                    lease_until=now + timedelta(seconds=self.policy.lease),
                    next_attempt_time=None,
                    cancel_requested=False,
                )
            entries = await write_change(uow, task, after, now)
            if entries is None:
                return None
            await commit_change(uow, self._events, task.state, after, entries)
        await announce(self._signals, after, entries)
        if self._metrics is not None:
            if lost:
                self._metrics.task_attempt(_label(task), "worker_lost")
            if after.state is TaskState.FAILED:
                self._metrics.task_attempt(_label(task), "failed")
            elif after.state is TaskState.RUNNING:
                self._metrics.task_claimed(_label(task), _waited(task, now))
        if after.state is not TaskState.RUNNING:
            return None
        return _Attempt(
            dataclasses.replace(after, last_sequence=entries[-1].sequence),
            renewed_until=after.lease_until,
        )

    # --- one attempt ------------------------------------------------------------------

    async def _attempt(self, attempt: _Attempt) -> None:
        """One attempt in its own span (``task.attempt``), linked to the trace of
        the call that created the task; its SQL, model and tool spans are children."""
        task = attempt.task
        with start_span(
            self._tracer,
            "task.attempt",
            links=links_to(task.traceparent),
            attributes={
                "cortex.task": task.name,
                "cortex.task.kind": task.kind.value,
                "cortex.expert": _label(task),
                "cortex.task.attempt": attempt.number,
                "cortex.worker": self.worker_id,
            },
        ) as span:
            await self._run_attempt(attempt)
            span.set_attribute("outcome", attempt.outcome or "lost")

    async def _run_attempt(self, attempt: _Attempt) -> None:
        assert attempt.stop is not None
        keeper = asyncio.create_task(self._keep_lease(attempt))
        work = asyncio.create_task(self._work(attempt))
        try:
            stop: asyncio.Future[Any] = attempt.stop
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()  # closes the model stream and cancels the tool calls
            outcome: _Outcome | None
            try:
                outcome = await work
            except asyncio.CancelledError:
                if not attempt.stop.done():
                    raise
                outcome = None
            except errors.CortexError as exc:
                outcome = _failure(exc)
            except Exception:
                log.exception("task attempt failed unexpectedly", extra={"task": attempt.task.id})
                outcome = _Failed(
                    TaskError(ErrorCategory.INTERNAL, "INTERNAL", "the attempt failed"), False
                )
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        reason = attempt.stop.result() if attempt.stop.done() else ""
        if reason == "lost":
            log.warning(
                "task lease lost; another worker may run it", extra={"task": attempt.task.id}
            )
            return
        await self._finish(attempt, outcome, reason)

    async def _keep_lease(self, attempt: _Attempt) -> None:
        """Renew the lease, poll for a cancel, stop the attempt before an
        unrenewable lease runs out."""
        assert attempt.stop is not None
        task = attempt.task
        lease = timedelta(seconds=self.policy.lease)
        while not attempt.stop.done():
            if await self._signals.wait_cancel(task.id, self.policy.heartbeat):
                _set(attempt.stop, "cancel")
                return
            now = self._clock.now()
            # Past this point another worker may soon claim the task: stop first.
            stop_at = (attempt.renewed_until or now + lease) - lease * LEASE_MARGIN
            try:
                async with asyncio.timeout(max((stop_at - now).total_seconds(), 0.05)):
                    async with self._uow() as uow:
                        answer = await uow.tasks.heartbeat(
                            task.id, self.worker_id, attempt.number, now + lease
                        )
                        await uow.commit()
            except (errors.Unavailable, TimeoutError):
                if self._clock.now() >= stop_at:
                    log.warning("cannot renew a task lease; stopping the attempt")
                    _set(attempt.stop, "lost")
                    return
                continue
            if answer is None:
                _set(attempt.stop, "lost")
                return
            attempt.renewed_until = now + lease
            if answer:
                _set(attempt.stop, "cancel")
                return

    async def _work(self, attempt: _Attempt) -> _Outcome:
        task = attempt.task
        if task.kind is not TaskKind.EXPERT:
            handler = self._jobs[task.kind]
            return _Succeeded(await handler(task))
        expert = self._experts.get(task.expert_id)
        flusher = asyncio.create_task(self._flush_periodically(attempt))
        try:
            async with asyncio.timeout(expert.timeout):
                return await self._run_expert(attempt, expert)
        except TimeoutError:
            return _Failed(
                TaskError(
                    ErrorCategory.DEADLINE_EXCEEDED,
                    "ATTEMPT_TIMEOUT",
                    f"the attempt ran longer than {expert.timeout:g} s",
                ),
                True,
            )
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)

    async def _run_expert(self, attempt: _Attempt, expert: Expert) -> _Outcome:
        task = attempt.task
        prompt = [
            PromptMessage("system", f"{expert.instructions}\n\nAttempt: {attempt.number}"),
            PromptMessage("user", json.dumps(dict(task.input), separators=(",", ":"))),
        ]
        transcript: list[TranscriptEntry] = []
        resume: tuple[ToolCall, ...] = ()
        if task.answer is not None:
            request, answer = task.answer.request, task.answer.answer
            transcript.extend(request.transcript)
            if request.tool_call is not None:
                last = decided_call(request.tool_call, answer.get("approve") is True)
                decided = (*request.decided, last)
                resume = tuple(c for c in decided if c.state is ToolCallState.CALLED)
                for call in decided:
                    if call.state is ToolCallState.DENIED:
                        denied = failed_result(call, "TOOL_DENIED", DENIED)
                        transcript.append(TranscriptEntry("tool", "", tool_result=denied))
            else:
                text = json.dumps(dict(answer), separators=(",", ":"))
                transcript.append(TranscriptEntry("user", f"Answer: {text}"))
        prompt.extend(_prompt_message(entry) for entry in transcript)
        loop = ToolLoop(
            provider=self._experts.provider(expert.id),
            invoker=self._invoker,
            counter=self._counter,
            limits=LoopLimits(max_steps=expert.max_steps, parallel=self.policy.parallel_tools),
            max_tokens=MAX_TASK_TOKENS,
        )
        parts: list[str] = []
        pending_calls = []
        turns = 0
        steps = loop.run(
            prompt,
            allowed=expert.tools,
            context=ToolContext(task.workspace_id, task.creator_id),
            resume=resume,
        )
        async with contextlib.aclosing(steps) as running:
            async for step in running:
                if isinstance(step, TextPiece):
                    parts.append(step.text)
                    attempt.text.append(step.text)
                    attempt.add(JournalKind.OUTPUT_DELTA, step.text)
                    continue
                if isinstance(step, ModelTurn) or (
                    isinstance(step, LoopFinished) and step.finish not in _NO_NEW_TURN
                ):
                    turns += 1  # a model turn ended: it called tools, or it answered
                    used = loop.usage.prompt_tokens + loop.usage.completion_tokens
                    attempt.add(JournalKind.PROGRESS, _progress(expert, turns, used))
                if isinstance(step, ModelTurn):
                    transcript.append(
                        TranscriptEntry("assistant", step.text, tool_calls=step.calls)
                    )
                    for call in step.calls:
                        attempt.add(JournalKind.TOOL_CALL, call)
                    pending_calls = [
                        c for c in step.calls if c.state is ToolCallState.PENDING_APPROVAL
                    ]
                    parts = []
                elif isinstance(step, CallResult):
                    transcript.append(TranscriptEntry("tool", "", tool_result=step.result))
                    attempt.add(JournalKind.TOOL_RESULT, step.result)
                    continue
                over = _over_budget(expert, loop.usage.prompt_tokens + loop.usage.completion_tokens)
                if over is not None:
                    return over
                if not isinstance(step, LoopFinished):
                    continue
                if step.error is not None:
                    return _failure(step.error)
                if step.finish is FinishReason.APPROVAL_REQUIRED and pending_calls:
                    call, *waiting = pending_calls
                    request = self._request(
                        approval_message(call, 1, len(pending_calls)),
                        APPROVAL_SCHEMA,
                        transcript,
                        tool_call=call,
                    )
                    return _NeedsInput(dataclasses.replace(request, waiting=tuple(waiting)))
                if step.finish is FinishReason.STEP_LIMIT:
                    return _Failed(
                        TaskError(
                            ErrorCategory.FAILED_PRECONDITION,
                            "STEP_LIMIT",
                            f"the attempt took {expert.max_steps} model turns without finishing",
                        ),
                        False,
                    )
                final = "".join(parts)
                transcript.append(TranscriptEntry("assistant", final))
                return self._output(expert, final, transcript)
        raise errors.Unavailable("the tool loop ended without finishing", reason="PROVIDER_FAILED")

    def _request(
        self,
        message: str,
        schema: Mapping[str, Any],
        transcript: list[TranscriptEntry],
        *,
        tool_call: Any = None,
    ) -> InputRequest:
        return InputRequest(
            id=new_id(),
            message=message,
            answer_schema=frozen(schema),
            expire_time=self._clock.now() + timedelta(seconds=self.policy.input_ttl),
            tool_call=tool_call,
            transcript=tuple(transcript),
        )

    def _output(self, expert: Expert, text: str, transcript: list[TranscriptEntry]) -> _Outcome:
        """The attempt's result from the model's final text: an input request
        (``{"input_request": {"message", "answer_schema"}}``), the JSON object the
        output schema asks for, or ``{"text": ...}`` without a schema."""
        parsed = _json_object(text)
        asked = parsed.get("input_request") if parsed is not None and len(parsed) == 1 else None
        if isinstance(asked, dict):
            schema = asked.get("answer_schema") or {"type": "object"}
            if not isinstance(schema, dict) or check_schema(schema):
                return _Failed(
                    TaskError(
                        ErrorCategory.INVALID_ARGUMENT,
                        "INVALID_INPUT_REQUEST",
                        "the expert asked for input with an answer_schema that is not a"
                        " JSON Schema",
                    ),
                    True,
                )
            return _NeedsInput(self._request(str(asked.get("message", "")), schema, transcript))
        if expert.output_schema is None:
            return _Succeeded({"text": text})
        if parsed is None:
            return _mismatch("the output is not a JSON object")
        found = violations(expert.output_schema, parsed, "output")
        if found:
            return _mismatch(f"{found[0].field}: {found[0].description}")
        return _Succeeded(parsed)

    # --- writes of a running attempt ------------------------------------------------

    async def _flush_periodically(self, attempt: _Attempt) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self._flush(attempt)

    async def _flush(self, attempt: _Attempt) -> None:
        """Journal what the attempt produced, fenced on its lease; kept for the next
        flush while the database is down."""
        if not attempt.pending:
            return
        drafts, attempt.pending = attempt.pending, []
        try:
            async with self._uow() as uow:
                entries = await uow.tasks.journal(
                    attempt.task.id, drafts, self._clock.now(), fence=attempt.task.fence
                )
                await uow.commit()
        except errors.Unavailable:
            attempt.pending[:0] = drafts
            return
        if not entries:
            if attempt.stop is not None:
                _set(attempt.stop, "lost")
            return
        attempt.task = dataclasses.replace(attempt.task, last_sequence=entries[-1].sequence)
        await self._signals.journal_appended(attempt.task.id, entries[-1].sequence)

    async def _finish(self, attempt: _Attempt, outcome: _Outcome | None, reason: str) -> None:
        """Write how the attempt ended (with what it produced), retried through a
        database outage while the lease lasts."""
        delay, ceiling = PERSIST_BACKOFF
        while True:
            try:
                await self._write_end(attempt, outcome, reason)
                return
            except errors.Unavailable:
                if self._clock.now() >= (attempt.renewed_until or self._clock.now()):
                    log.warning(
                        "the end of a task attempt could not be stored; it will be retried",
                        extra={"task": attempt.task.id},
                    )
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, ceiling)

    async def _write_end(self, attempt: _Attempt, outcome: _Outcome | None, reason: str) -> None:
        before = attempt.task
        now = self._clock.now()
        async with self._uow() as uow:
            current = await uow.tasks.get_by_id(before.id)
            if current is None or current.fence != before.fence:
                return  # deleted, or the lease was taken over: not ours to write
            if reason != "cancel" and current.cancel_requested:
                reason = "cancel"
            after = self._ended(attempt, current, outcome, reason, now)
            entries = await write_change(uow, current, after, now, attempt.pending)
            if entries is None:
                return
            await commit_change(uow, self._events, current.state, after, entries)
        attempt.pending = []
        attempt.outcome = _outcome_of(after)
        if self._metrics is not None:
            self._metrics.task_attempt(_label(after), attempt.outcome)
        await announce(self._signals, after, entries)
        if after.state is TaskState.QUEUED:
            await self._signals.work_queued()

    def _ended(
        self, attempt: _Attempt, task: Task, outcome: _Outcome | None, reason: str, now: datetime
    ) -> Task:
        if reason == "cancel":
            # The partial output is kept: the text the stopped attempt had streamed.
            partial = frozen({"text": "".join(attempt.text)}) if attempt.text else None
            return task.moved(
                TaskState.CANCELLED, now, attempts=task.ended_attempt(now, None), output=partial
            )
        if reason == "handback" or outcome is None:
            stopped = TaskError(
                ErrorCategory.UNAVAILABLE, WORKER_SHUTDOWN, "the worker shut down; queued again"
            )
            return task.moved(
                TaskState.QUEUED,
                now,
                attempts=task.ended_attempt(now, stopped),
                next_attempt_time=None,
            )
        if isinstance(outcome, _Succeeded):
            return task.moved(
                TaskState.SUCCEEDED,
                now,
                attempts=task.ended_attempt(now, None),
                output=frozen(outcome.output),
                error=None,
                answer=None,
            )
        if isinstance(outcome, _NeedsInput):
            return task.moved(
                TaskState.INPUT_REQUIRED,
                now,
                attempts=task.ended_attempt(now, None),
                input_request=outcome.request,
                answer=None,
            )
        attempts = task.ended_attempt(now, outcome.error)
        failed = sum(1 for a in attempts if a.counted)
        if outcome.retryable and failed < task.max_attempts:
            return task.moved(
                TaskState.QUEUED,
                now,
                attempts=attempts,
                error=outcome.error,
                next_attempt_time=now + timedelta(seconds=self._backoff(failed)),
            )
        return task.moved(TaskState.FAILED, now, attempts=attempts, error=outcome.error)

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.policy.retry_max, self.policy.retry_initial * 2 ** min(failures - 1, 30))
        return random.uniform(ceiling / 2, ceiling)

    # --- drain and sweeper -----------------------------------------------------------

    async def drain(self, seconds: float) -> None:
        """Stop claiming; let running attempts finish for ``seconds``, then hand
        the rest back (QUEUED, not counted as failed)."""
        self._draining = True
        running = [task for _, task in self._running.values()]
        if running:
            await asyncio.wait(running, timeout=max(seconds, 0.0))
        left = list(self._running.values())
        for attempt, _ in left:
            if attempt.stop is not None:
                _set(attempt.stop, "handback")
        if left:
            await asyncio.gather(*(task for _, task in left), return_exceptions=True)
            log.info("handed back %d running tasks", len(left))

    async def sweep(self) -> None:
        """One round: fail tasks whose input request expired; delete terminal
        tasks older than the retention."""
        now = self._clock.now()
        async with self._uow() as uow:
            expired = await uow.tasks.expired_inputs(now, SWEEP_BATCH)
        for task in expired:
            asked = task.input_request
            error = TaskError(
                ErrorCategory.FAILED_PRECONDITION,
                "INPUT_REQUEST_EXPIRED",
                "nobody answered the task's input request before it expired"
                + (f" (it asked: {asked.message})" if asked is not None and asked.message else ""),
                frozen({"input_request_id": asked.id} if asked is not None else {}),
            )
            after = task.moved(TaskState.FAILED, now, error=error, answer=None)
            async with self._uow() as uow:
                entries = await write_change(uow, task, after, now)
                if entries is None:
                    continue  # answered or cancelled meanwhile
                await commit_change(uow, self._events, task.state, after, entries)
            await announce(self._signals, after, entries)
        async with self._uow() as uow:
            deleted = await uow.tasks.delete_completed(
                now - timedelta(seconds=self.policy.retention), SWEEP_BATCH
            )
            await uow.commit()
        if deleted:
            log.info("deleted %d completed tasks past their retention", deleted)
        if self._metrics is not None:
            async with self._uow() as uow:
                self._metrics.task_queue_depth(await uow.tasks.count_queued(self._kinds))


_NOTHING = object()
# A loop that ends with these ends after the turn its last ModelTurn reported.
_NO_NEW_TURN = frozenset({FinishReason.STEP_LIMIT, FinishReason.APPROVAL_REQUIRED})


def _set(future: asyncio.Future[str], reason: str) -> None:
    if not future.done():
        future.set_result(reason)


def _prompt_message(entry: TranscriptEntry) -> PromptMessage:
    if entry.tool_result is not None:
        return tool_message(entry.tool_result)
    return PromptMessage(entry.role, entry.content, tool_calls=entry.tool_calls)


def _json_object(text: str) -> dict[str, Any] | None:
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _mismatch(detail: str) -> _Failed:
    return _Failed(
        TaskError(
            ErrorCategory.FAILED_PRECONDITION,
            "OUTPUT_SCHEMA_MISMATCH",
            f"the output does not match the expert's output schema ({detail})",
        ),
        True,
    )


def _label(task: Task) -> str:
    """The metrics' ``expert`` label: the expert's id, or an internal job's kind."""
    return task.expert_id if task.kind is TaskKind.EXPERT else task.kind.value


def _waited(task: Task, now: datetime) -> float:
    """Seconds from when ``task`` (as claimed) became claimable to ``now``."""
    if task.state is TaskState.RUNNING and task.lease_until is not None:
        since = task.lease_until  # a lost lease: claimable once it ran out
    else:
        since = max(task.update_time, task.next_attempt_time or task.update_time)
    return max((now - since).total_seconds(), 0.0)


def _outcome_of(task: Task) -> str:
    """How the attempt that left ``task`` in its state ended."""
    if task.state is TaskState.QUEUED:
        last = task.attempts[-1] if task.attempts else None
        shut = last is not None and last.error is not None and last.error.reason == WORKER_SHUTDOWN
        return "handed_back" if shut else "retried"
    return str(task.state.value)  # succeeded, failed, cancelled, input_required


def _progress(expert: Expert, turns: int, used: int) -> Progress:
    """Where an attempt stands after its ``turns``-th model turn: the share of its
    step limit used, and the tokens it used (of its budget, when it has one)."""
    budget = f" of {expert.token_budget}" if expert.token_budget else ""
    return Progress(
        min(turns / max(expert.max_steps, 1), 1.0),
        f"step {turns} of {expert.max_steps}, {used} tokens used{budget}",
    )


def _over_budget(expert: Expert, used: int) -> _Failed | None:
    if expert.token_budget and used > expert.token_budget:
        return _Failed(
            TaskError(
                ErrorCategory.RESOURCE_EXHAUSTED,
                "TOKEN_BUDGET_EXHAUSTED",
                f"the attempt used {used} tokens, over the expert's budget of"
                f" {expert.token_budget}",
            ),
            False,
        )
    return None
