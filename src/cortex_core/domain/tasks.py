"""Experts and the tasks delegated to them: states, attempts, input requests, journal.

A task moves ``QUEUED → RUNNING → (INPUT_REQUIRED → QUEUED → RUNNING →)
SUCCEEDED | FAILED | CANCELLED``; a retryable failure with attempts left goes
back to QUEUED (after a backoff). :func:`check_transition` is the one rule
book: a terminal state never changes again, and nothing else may skip a step.

Attempts: every claim starts one (``attempt_count`` is the number started).
``max_attempts`` bounds the attempts that *failed*: an attempt that ended by
asking for input, or was handed back by a worker that shut down
(:data:`WORKER_SHUTDOWN`), is visible but not counted against it.

The journal is what ``WatchTask`` replays: one entry per task snapshot,
progress report, coalesced output text, tool call and tool result, numbered
1, 2, 3 … per task and written in the same transaction as the change that
produced it.

Internal jobs (summaries) are tasks of another :class:`TaskKind` on the same
table and runner; they are never listed or returned as expert tasks.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cortex_core import errors
from cortex_core.domain.tools import ToolCall, ToolCallState, ToolResult

JsonObject = Mapping[str, Any]

TASK = "workspaces/{}/tasks/{}"
EXPERT = "experts/{}"

MIN_ATTEMPTS = 1
MAX_ATTEMPTS = 10
MAX_INPUT_BYTES = 256 * 1024
WORKER_LOST = "WORKER_LOST"
WORKER_SHUTDOWN = "WORKER_SHUTDOWN"  # handed back at SIGTERM: not a failure


def task_name(workspace_id: str, task_id: str) -> str:
    return TASK.format(workspace_id, task_id)


def expert_name(expert_id: str) -> str:
    return EXPERT.format(expert_id)


def frozen(value: JsonObject | None) -> JsonObject:
    return MappingProxyType(dict(value or {}))


class TaskState(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    INPUT_REQUIRED = "input_required"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
ACTIVE = frozenset({TaskState.QUEUED, TaskState.RUNNING})  # what the workspace caps count

_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # QUEUED → FAILED: the expert was removed from the configuration meanwhile.
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.RUNNING: frozenset(
        {
            TaskState.SUCCEEDED,
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.QUEUED,  # a retry, or handed back at shutdown
            TaskState.INPUT_REQUIRED,
            TaskState.RUNNING,  # a lost lease claimed again by another worker
        }
    ),
    TaskState.INPUT_REQUIRED: frozenset(
        {
            TaskState.QUEUED,
            TaskState.CANCELLED,
            TaskState.FAILED,
            TaskState.INPUT_REQUIRED,  # the next approval of the same model turn
        }
    ),
}


def can_transition(old: TaskState, new: TaskState) -> bool:
    return new in _TRANSITIONS.get(old, frozenset())


def check_transition(old: TaskState, new: TaskState) -> None:
    """Raise FailedPrecondition (TASK_ALREADY_COMPLETED for a terminal ``old``,
    else INVALID_TASK_TRANSITION) unless ``old → new`` is allowed."""
    if can_transition(old, new):
        return
    if old.terminal:
        raise errors.FailedPrecondition(
            f"the task is already {old.value}", reason="TASK_ALREADY_COMPLETED"
        )
    raise errors.FailedPrecondition(
        f"a task cannot go from {old.value} to {new.value}", reason="INVALID_TASK_TRANSITION"
    )


class TaskKind(enum.Enum):
    EXPERT = "expert"  # delegated by a user; the contract's Task
    SUMMARY = "summary"  # internal: a conversation's summary checkpoint


class ErrorCategory(enum.Enum):
    """Which :mod:`cortex_core.errors` class a stored error is (the api maps it
    to a status code through its one table, via :meth:`TaskError.exception`)."""

    INVALID_ARGUMENT = "invalid_argument"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    ABORTED = "aborted"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


_CATEGORIES: tuple[tuple[type[errors.CortexError], ErrorCategory], ...] = (
    (errors.InvalidArgument, ErrorCategory.INVALID_ARGUMENT),
    (errors.FailedPrecondition, ErrorCategory.FAILED_PRECONDITION),
    (errors.ResourceExhausted, ErrorCategory.RESOURCE_EXHAUSTED),
    (errors.Aborted, ErrorCategory.ABORTED),
    (errors.DeadlineExceeded, ErrorCategory.DEADLINE_EXCEEDED),
    (errors.Unavailable, ErrorCategory.UNAVAILABLE),
)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskError:
    """Why an attempt or a task failed (a ``google.rpc.Status`` on the wire)."""

    category: ErrorCategory
    reason: str
    message: str
    metadata: JsonObject = dataclasses.field(default_factory=lambda: frozen(None))

    @classmethod
    def of(cls, error: errors.CortexError) -> TaskError:
        category = next(
            (cat for kind, cat in _CATEGORIES if isinstance(error, kind)), ErrorCategory.INTERNAL
        )
        return cls(category, error.reason, error.message, frozen(error.metadata))

    def exception(self) -> errors.CortexError:
        """The domain error this stands for (the api turns it into a Status)."""
        kinds = {cat: kind for kind, cat in _CATEGORIES}
        kind = kinds.get(self.category, errors.CortexError)
        return kind(self.message, reason=self.reason, metadata=dict(self.metadata))


@dataclasses.dataclass(frozen=True, slots=True)
class TaskAttempt:
    number: int  # 1-based
    start_time: datetime
    worker: str = ""
    end_time: datetime | None = None
    error: TaskError | None = None

    @property
    def counted(self) -> bool:
        """Whether it counts against ``max_attempts`` (it failed)."""
        return self.error is not None and self.error.reason != WORKER_SHUTDOWN


@dataclasses.dataclass(frozen=True, slots=True)
class TranscriptEntry:
    """One message of an attempt's conversation with its model, kept across a wait
    for input so the next attempt resumes where this one asked."""

    role: str  # "assistant", "user" or "tool"
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_result: ToolResult | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class InputRequest:
    """What a task in INPUT_REQUIRED waits for (a tool approval when ``tool_call``
    is set: the answer is ``{"approve": true|false}``).

    A model turn may call several tools that need approval: they are asked one
    after another, one request each. ``decided`` holds the calls of that turn
    already answered (state CALLED when approved, DENIED when not), ``waiting``
    those still to ask after this one; the task resumes once the last is answered.
    """

    id: str
    message: str
    answer_schema: JsonObject
    expire_time: datetime
    tool_call: ToolCall | None = None
    transcript: tuple[TranscriptEntry, ...] = ()  # the attempt so far, to resume
    decided: tuple[ToolCall, ...] = ()
    waiting: tuple[ToolCall, ...] = ()

    @property
    def approval_number(self) -> int:
        """Which approval of its model turn this is (1-based)."""
        return len(self.decided) + 1

    @property
    def approvals(self) -> int:
        """How many approvals its model turn asks for (0 for a question)."""
        return len(self.decided) + 1 + len(self.waiting) if self.tool_call else 0


def approval_message(call: ToolCall, number: int, of: int) -> str:
    """What an approval request asks, for a person."""
    text = f"approve calling {call.tool} with {json.dumps(dict(call.arguments), default=str)}"
    return f"{text} ({number} of {of})" if of > 1 else text


def decided_call(call: ToolCall, approved: bool) -> ToolCall:
    state = ToolCallState.CALLED if approved else ToolCallState.DENIED
    return dataclasses.replace(call, state=state)


APPROVAL_SCHEMA: JsonObject = frozen(
    {
        "type": "object",
        "properties": {"approve": {"type": "boolean"}},
        "required": ["approve"],
        "additionalProperties": False,
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class InputAnswer:
    """A provided answer the next attempt resumes with."""

    request: InputRequest
    answer: JsonObject
    answer_time: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Task:
    id: str
    workspace_id: str
    expert_id: str  # for SUMMARY jobs: "" (the job's input says what to do)
    input: JsonObject
    max_attempts: int
    creator_id: str
    create_time: datetime
    update_time: datetime
    kind: TaskKind = TaskKind.EXPERT
    state: TaskState = TaskState.QUEUED
    attempts: tuple[TaskAttempt, ...] = ()
    output: JsonObject | None = None
    error: TaskError | None = None
    complete_time: datetime | None = None
    next_attempt_time: datetime | None = None
    input_request: InputRequest | None = None
    answer: InputAnswer | None = None
    request_id: str = ""
    lease_owner: str = ""
    lease_until: datetime | None = None
    cancel_requested: bool = False
    last_sequence: int = 0
    traceparent: str = ""  # W3C traceparent of the call that created it ("" when untraced)

    @property
    def name(self) -> str:
        return task_name(self.workspace_id, self.id)

    @property
    def expert(self) -> str:
        return expert_name(self.expert_id)

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)

    @property
    def failed_attempts(self) -> int:
        return sum(1 for a in self.attempts if a.counted)

    @property
    def fence(self) -> Fence:
        """What a conditional write of the task expects to find (see ``Fence``)."""
        return Fence(self.state, self.attempt_count, self.lease_owner)

    def moved(self, state: TaskState, now: datetime, **changes: Any) -> Task:
        """This task in ``state`` (checked by :func:`check_transition`) with
        ``changes``; a terminal state sets ``complete_time`` and drops the lease."""
        check_transition(self.state, state)
        if state.terminal:
            changes.setdefault("complete_time", now)
            changes.setdefault("next_attempt_time", None)
            changes.setdefault("input_request", None)
        if state is not TaskState.RUNNING:
            changes.setdefault("lease_owner", "")
            changes.setdefault("lease_until", None)
        if state is not TaskState.INPUT_REQUIRED:
            changes.setdefault("input_request", None)
        return dataclasses.replace(self, state=state, update_time=now, **changes)

    def ended_attempt(self, now: datetime, error: TaskError | None) -> tuple[TaskAttempt, ...]:
        """The attempts with the last one ended (at ``now``, with ``error``)."""
        if not self.attempts:
            return ()
        last = self.attempts[-1]
        if last.end_time is not None:
            return self.attempts
        return (*self.attempts[:-1], dataclasses.replace(last, end_time=now, error=error))


@dataclasses.dataclass(frozen=True, slots=True)
class Fence:
    """A conditional write's expectations: the row is still in ``state`` with
    ``attempt_count`` attempts and ``lease_owner`` ("" for none). A running
    attempt's writes pass only while its worker holds the lease, so a worker
    that lost its lease can never overwrite the attempt that replaced it.
    ``update_time``, when set, also requires the row unchanged since it was read
    (a write that keeps state, attempts and lease: the next approval of a turn)."""

    state: TaskState
    attempt_count: int
    lease_owner: str
    update_time: datetime | None = None


class JournalKind(enum.Enum):
    TASK = "task"  # a snapshot after a state or attempt change
    PROGRESS = "progress"
    OUTPUT_DELTA = "output_delta"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    fraction: float  # [0, 1], or -1 when unknown
    message: str


JournalBody = Task | Progress | str | ToolCall | ToolResult


@dataclasses.dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled frame. ``body`` by kind: TASK a :class:`Task`, PROGRESS a
    :class:`Progress`, OUTPUT_DELTA the text (``str``), TOOL_CALL a
    :class:`ToolCall`, TOOL_RESULT a :class:`ToolResult`."""

    task_id: str
    sequence: int
    kind: JournalKind
    attempt: int
    time: datetime
    body: JournalBody


@dataclasses.dataclass(frozen=True, slots=True)
class JournalDraft:
    """An entry before the journal numbers it."""

    kind: JournalKind
    attempt: int
    body: JournalBody


def snapshot(task: Task) -> JournalDraft:
    return JournalDraft(JournalKind.TASK, task.attempt_count, task)


@dataclasses.dataclass(frozen=True, slots=True)
class JournalRead:
    """Entries after a sequence, in order, with what the journal holds:
    ``oldest_sequence`` is the first entry still stored (``last_sequence + 1``
    when none is), so ``after_sequence + 1 < oldest_sequence`` means entries were
    pruned before they could be read."""

    entries: tuple[JournalEntry, ...]
    oldest_sequence: int
    last_sequence: int

    def pruned_after(self, after_sequence: int) -> bool:
        return after_sequence + 1 < self.oldest_sequence


# --- experts -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Expert:
    """An expert: configuration the operator writes (``[experts.<id>]``)."""

    id: str
    display_name: str
    description: str
    instructions: str
    providers: tuple[str, ...] = ()  # names from the LLM configuration; () = the chain
    tools: tuple[str, ...] = ()  # tool ids
    input_schema: JsonObject = dataclasses.field(default_factory=lambda: frozen({}))
    output_schema: JsonObject | None = None
    max_attempts: int = 3
    timeout: float = 300.0  # seconds per attempt
    max_steps: int = 8
    token_budget: int = 0  # 0: no limit

    @property
    def name(self) -> str:
        return expert_name(self.id)


def expert_not_found() -> errors.NotFound:
    return errors.NotFound("expert not found", reason="EXPERT_NOT_FOUND")


def task_not_found() -> errors.NotFound:
    return errors.NotFound("task not found", reason="TASK_NOT_FOUND")
