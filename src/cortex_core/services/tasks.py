"""The task use cases of ``ExpertService``: CreateTask, GetTask, ListTasks,
CancelTask, ProvideTaskInput, and the journal WatchTask streams.

Access (``services/access.py``): any member reads; EDITOR creates, cancels and
answers (EDITOR_REQUIRED); a task outside the caller's workspaces is
TASK_NOT_FOUND, like one that does not exist (a missing workspace too, except
for CreateTask and ListTasks, which name the workspace: WORKSPACE_NOT_FOUND).

Every state change is one unit of work: a fenced write of the task row, its
journal snapshot and its ``TaskStateChanged`` event (an expert task's), all in
one transaction (:func:`commit_change`, through ``EventBus.commit``: a change
that commits has its event, whatever happens to the process next), then, after
the commit, the wake-ups (:class:`TaskSignals`, :func:`announce`). The runner
(``services/task_runner.py``) makes its changes the same way, through
:func:`write_change`, :func:`commit_change` and :func:`announce`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cortex_core import errors
from cortex_core.domain.events import TaskStateChanged
from cortex_core.domain.identity import Caller, new_id, reject, text_violation
from cortex_core.domain.paging import Page, PageRequest
from cortex_core.domain.tasks import (
    MAX_ATTEMPTS,
    MAX_INPUT_BYTES,
    MIN_ATTEMPTS,
    InputAnswer,
    InputRequest,
    JournalDraft,
    JournalEntry,
    JournalRead,
    Task,
    TaskKind,
    TaskState,
    approval_message,
    decided_call,
    frozen,
    snapshot,
    task_not_found,
)
from cortex_core.ports import Clock, TaskSignals, UnitOfWork, UnitOfWorkFactory
from cortex_core.services.access import require_role
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.experts import ExpertCatalog
from cortex_core.services.json_schemas import violations
from cortex_core.services.telemetry import current_traceparent

REQUEST_ID_TTL = timedelta(hours=24)
MAX_REQUEST_ID = 128
QUEUE_FULL_RETRY_AFTER = 5.0  # seconds a refused CreateTask is told to wait
MAX_JOURNAL_READ = 1000
DEFAULT_INPUT_TTL = 24 * 3600.0  # seconds an input request waits (CORTEX_TASK_INPUT_TTL)
JOB_ATTEMPTS = 5  # attempts of an internal job (summaries) before it fails
_CHANGE_RETRIES = 5  # a fenced write lost to a concurrent change is re-read and retried


class Tasks:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        events: EventBus,
        signals: TaskSignals,
        experts: ExpertCatalog,
        max_queued: int,
        input_ttl: float = DEFAULT_INPUT_TTL,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events
        self.signals = signals
        self._experts = experts
        self._max_queued = max_queued
        self._input_ttl = timedelta(seconds=input_ttl)

    async def create(
        self,
        caller: Caller,
        workspace_id: str,
        expert_id: str,
        task_input: Mapping[str, Any],
        *,
        max_attempts: int = 0,
        request_id: str = "",
    ) -> Task:
        """Queue a task (CreateTask); with a ``request_id`` seen in the workspace
        within 24 h, return that task instead.

        Raise InvalidArgument (``task.input`` violations of the expert's input
        schema or size, ``task.max_attempts`` outside 1..10, ``request_id`` too
        long), NotFound (WORKSPACE_NOT_FOUND, EXPERT_NOT_FOUND),
        PermissionDenied (EDITOR_REQUIRED), Aborted (REQUEST_ID_REUSED: the id
        was used for a different task), ResourceExhausted (TASK_QUEUE_FULL, with
        retry_after). The workspace is checked first: to an outsider every CreateTask
        fails alike (WORKSPACE_NOT_FOUND), whatever its body. An empty ``expert_id``
        (the api's answer to a malformed ``task.expert``) is a violation on it."""
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id, write=True)
        if not expert_id:
            reject(
                [errors.FieldViolation("task.expert", "must look like experts/ID", "INVALID_NAME")]
            )
        expert = self._experts.get(expert_id)
        found = [text_violation(request_id, "request_id", required=False, limit=MAX_REQUEST_ID)]
        if max_attempts and not MIN_ATTEMPTS <= max_attempts <= MAX_ATTEMPTS:
            found.append(
                errors.FieldViolation(
                    "task.max_attempts", f"must be 0 (the expert's default) or 1 to {MAX_ATTEMPTS}"
                )
            )
        size = len(json.dumps(task_input, separators=(",", ":"), default=str).encode())
        if size > MAX_INPUT_BYTES:
            found.append(
                errors.FieldViolation(
                    "task.input", f"must be at most {MAX_INPUT_BYTES} bytes", "TOO_LONG"
                )
            )
        else:
            found.extend(violations(expert.input_schema, task_input, "task.input"))
        reject(found)
        now = self._clock.now()
        task = Task(
            id=new_id(),
            workspace_id=workspace_id,
            expert_id=expert.id,
            input=frozen(task_input),
            max_attempts=max_attempts or expert.max_attempts,
            creator_id=caller.user_id,
            create_time=now,
            update_time=now,
            request_id=request_id,
            traceparent=current_traceparent(),  # the attempts' spans link back to it
        )
        for _ in range(2):
            async with self._uow() as uow:
                await require_role(uow, caller, workspace_id, write=True)
                if request_id:
                    earlier = await uow.tasks.by_request_id(
                        workspace_id, request_id, now - REQUEST_ID_TTL
                    )
                    if earlier is not None:
                        return _same_request(earlier, task)
                queued, _ = await uow.tasks.count_active(workspace_id)
                if queued >= self._max_queued:
                    raise errors.ResourceExhausted(
                        f"the workspace has {queued} tasks waiting to run, the most it may have",
                        reason="TASK_QUEUE_FULL",
                        retry_after=QUEUE_FULL_RETRY_AFTER,
                    )
                try:
                    await uow.tasks.add(task)
                except errors.AlreadyExists:
                    continue  # the same request_id, created concurrently: read it
                entries = await uow.tasks.journal(task.id, [snapshot(task)], now, fence=None)
                await commit_change(uow, self._events, None, task, entries, caller.user_id)
            await announce(self.signals, task, entries)
            await self.signals.work_queued()
            return _with_sequence(task, entries)
        raise errors.Aborted("the request was retried concurrently; retry", reason="ABORTED")

    async def get(self, caller: Caller, workspace_id: str, task_id: str) -> Task:
        """GetTask; raise NotFound (TASK_NOT_FOUND)."""
        async with self._uow() as uow:
            return await _readable(uow, caller, workspace_id, task_id)

    async def list(
        self,
        caller: Caller,
        workspace_id: str,
        page: PageRequest,
        *,
        state: TaskState | None = None,
        expert_id: str = "",
    ) -> Page[Task]:
        """ListTasks: newest first, optionally one state and one expert. Raise
        NotFound (WORKSPACE_NOT_FOUND), InvalidArgument (INVALID_PAGE_TOKEN)."""
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id)
            return await uow.tasks.list(workspace_id, page, state=state, expert_id=expert_id)

    async def cancel(self, caller: Caller, workspace_id: str, task_id: str) -> Task:
        """CancelTask. A queued or waiting task is CANCELLED now; a running one is
        flagged and its worker told (it stops within about a second and the task
        becomes CANCELLED; the task returned is still RUNNING). Cancelling a
        cancelled task returns it. Raise NotFound (TASK_NOT_FOUND),
        PermissionDenied (EDITOR_REQUIRED), FailedPrecondition
        (TASK_ALREADY_COMPLETED for a SUCCEEDED or FAILED task)."""
        for _ in range(_CHANGE_RETRIES):
            now = self._clock.now()
            async with self._uow() as uow:
                task = await _writable(uow, caller, workspace_id, task_id)
                if task.state is TaskState.CANCELLED:
                    return task
                if task.state.terminal:
                    raise errors.FailedPrecondition(
                        f"the task already {task.state.value}", reason="TASK_ALREADY_COMPLETED"
                    )
                if task.state is TaskState.RUNNING:
                    if not await uow.tasks.request_cancel(task.id):
                        continue  # it just stopped running: look again
                    await uow.commit()
                    await self.signals.cancel(task.id)
                    return Task(**{**_fields(task), "cancel_requested": True})
                cancelled = task.moved(TaskState.CANCELLED, now)
                entries = await write_change(uow, task, cancelled, now)
                if entries is None:
                    continue  # claimed or answered meanwhile: look again
                await commit_change(uow, self._events, task.state, cancelled, entries)
            await announce(self.signals, cancelled, entries)
            return _with_sequence(cancelled, entries)
        raise errors.Aborted("the task kept changing; retry", reason="ABORTED")

    async def provide_input(
        self,
        caller: Caller,
        workspace_id: str,
        task_id: str,
        input_request_id: str,
        answer: Mapping[str, Any],
    ) -> Task:
        """ProvideTaskInput: store the answer and queue the task to resume, exactly
        once. An approval with more approvals of the same model turn waiting
        keeps the task INPUT_REQUIRED with the next one as a new request (its
        own id and expiry); the task resumes once the last is answered. Raise
        NotFound (TASK_NOT_FOUND), PermissionDenied (EDITOR_REQUIRED),
        FailedPrecondition (TASK_NOT_WAITING, INPUT_REQUEST_MISMATCH,
        INPUT_REQUEST_EXPIRED), InvalidArgument
        (``input`` violations of the request's answer schema)."""
        for _ in range(_CHANGE_RETRIES):
            now = self._clock.now()
            async with self._uow() as uow:
                task = await _writable(uow, caller, workspace_id, task_id)
                resumed = self._answered(task, input_request_id, answer, now)
                entries = await write_change(uow, task, resumed, now, exact=True)
                if entries is None:
                    continue  # changed meanwhile (answered, cancelled): look again
                await commit_change(uow, self._events, task.state, resumed, entries, caller.user_id)
            await announce(self.signals, resumed, entries)
            if resumed.state is TaskState.QUEUED:
                await self.signals.work_queued()
            return _with_sequence(resumed, entries)
        raise errors.Aborted("the task kept changing; retry", reason="ABORTED")

    def _answered(
        self, task: Task, input_request_id: str, answer: Mapping[str, Any], now: datetime
    ) -> Task:
        """``task`` after ``answer`` to its request ``input_request_id`` (checked)."""
        request = task.input_request
        if task.state is not TaskState.INPUT_REQUIRED or request is None:
            raise errors.FailedPrecondition(
                "the task is not waiting for input", reason="TASK_NOT_WAITING"
            )
        if request.id != input_request_id:
            raise errors.FailedPrecondition(
                "input_request_id is not the task's pending request",
                reason="INPUT_REQUEST_MISMATCH",
            )
        if request.expire_time <= now:
            raise errors.FailedPrecondition(
                "the input request has expired", reason="INPUT_REQUEST_EXPIRED"
            )
        reject([*violations(request.answer_schema, answer, "input")])
        if request.tool_call is not None and request.waiting:
            following = self._next_approval(request, answer, now)
            return task.moved(TaskState.INPUT_REQUIRED, now, input_request=following)
        return task.moved(
            TaskState.QUEUED,
            now,
            answer=InputAnswer(request, frozen(answer), now),
            next_attempt_time=None,
        )

    def _next_approval(
        self, request: InputRequest, answer: Mapping[str, Any], now: datetime
    ) -> InputRequest:
        """The request for the next approval of ``request``'s model turn."""
        assert request.tool_call is not None
        call, *rest = request.waiting
        decided = (*request.decided, decided_call(request.tool_call, answer.get("approve") is True))
        return dataclasses.replace(
            request,
            id=new_id(),
            message=approval_message(call, len(decided) + 1, request.approvals),
            expire_time=now + self._input_ttl,
            tool_call=call,
            decided=decided,
            waiting=tuple(rest),
        )

    # --- the journal, for WatchTask --------------------------------------------------

    async def open_journal(self, caller: Caller, workspace_id: str, task_id: str) -> Task:
        """The task a watch opens on (access checked as GetTask); its
        ``last_sequence`` is the journal's end now."""
        return await self.get(caller, workspace_id, task_id)

    async def read_journal(self, task_id: str, after_sequence: int, limit: int) -> JournalRead:
        """Up to ``limit`` (at most 1000) entries after ``after_sequence``, in
        order, with the journal's oldest and last sequence (``JournalRead``).
        Call :meth:`open_journal` first: this does no access check."""
        if after_sequence < 0:
            raise errors.InvalidArgument(
                "after_sequence must not be negative",
                [errors.FieldViolation("after_sequence", "must be 0 or more")],
            )
        async with self._uow() as uow:
            return await uow.tasks.read_journal(
                task_id, after_sequence, max(0, min(limit, MAX_JOURNAL_READ))
            )

    async def wait_journal(self, task_id: str, after_sequence: int, max_wait: float) -> None:
        """Return when an entry after ``after_sequence`` may exist (a wake-up from
        any replica) or after ``max_wait`` seconds; holds no connection. Read with
        :meth:`read_journal` either way (wake-ups are hints)."""
        await self.signals.wait_journal(task_id, after_sequence, max_wait)


# --- shared with the runner ------------------------------------------------------------


async def write_change(
    uow: UnitOfWork,
    before: Task,
    after: Task,
    now: datetime,
    drafts: Sequence[JournalDraft] = (),
    *,
    exact: bool = False,
) -> list[JournalEntry] | None:
    """Write ``after`` over ``before`` (fenced on ``before``; with ``exact``, also
    on its ``update_time``) and journal ``drafts`` then its snapshot, in ``uow``;
    None when the row changed meanwhile (nothing written). The caller commits."""
    expected = before.fence
    if exact:
        expected = dataclasses.replace(expected, update_time=before.update_time)
    if not await uow.tasks.save(after, expected=expected):
        return None
    return await uow.tasks.journal(after.id, [*drafts, snapshot(after)], now, fence=None)


async def commit_change(
    uow: UnitOfWork,
    events: EventBus,
    previous: TaskState | None,
    task: Task,
    entries: Sequence[JournalEntry],
    actor: str = "",
) -> None:
    """Commit ``uow`` (the change of ``task`` from ``previous``, written by the
    caller) with the change's ``TaskStateChanged`` event (expert tasks only)
    written in the same transaction (``EventBus.commit``). Raises what the commit
    raises."""
    changes: list[object] = []
    if task.kind is TaskKind.EXPERT:
        shown = _with_sequence(task, entries)
        changes.append(
            TaskStateChanged(
                actor_id=actor, time=task.update_time, task=shown, previous_state=previous
            )
        )
    await events.commit(uow, changes)


async def announce(signals: TaskSignals, task: Task, entries: Sequence[JournalEntry]) -> None:
    """After the commit (and out of its unit of work): the journal wake-up."""
    if entries:
        await signals.journal_appended(task.id, entries[-1].sequence)


async def queue_job(
    uow: UnitOfWork,
    kind: TaskKind,
    workspace_id: str,
    subject: str,
    job_input: Mapping[str, Any],
    now: datetime,
    *,
    max_attempts: int = JOB_ATTEMPTS,
) -> Task | None:
    """Queue an internal job of ``kind`` about ``subject`` (e.g. a conversation id)
    in ``uow``, unless one is already queued or running; the new job, or None.
    The caller commits, then wakes the workers (``TaskSignals.work_queued``)."""
    if await uow.tasks.find_open(workspace_id, kind, subject) is not None:
        return None
    job = Task(
        id=new_id(),
        workspace_id=workspace_id,
        expert_id=subject,
        input=frozen(job_input),
        max_attempts=max_attempts,
        creator_id="",
        create_time=now,
        update_time=now,
        kind=kind,
    )
    await uow.tasks.add(job)
    return job


def _with_sequence(task: Task, entries: Sequence[JournalEntry]) -> Task:
    if not entries:
        return task
    return Task(**{**_fields(task), "last_sequence": entries[-1].sequence})


def _fields(task: Task) -> dict[str, Any]:
    return {name: getattr(task, name) for name in Task.__dataclass_fields__}


def _same_request(earlier: Task, task: Task) -> Task:
    if (
        earlier.expert_id != task.expert_id
        or dict(earlier.input) != dict(task.input)
        or earlier.max_attempts != task.max_attempts
    ):
        raise errors.Aborted(
            "this request_id was used for a different task", reason="REQUEST_ID_REUSED"
        )
    return earlier


async def _readable(uow: UnitOfWork, caller: Caller, workspace_id: str, task_id: str) -> Task:
    return await _task(uow, caller, workspace_id, task_id, write=False)


async def _writable(uow: UnitOfWork, caller: Caller, workspace_id: str, task_id: str) -> Task:
    return await _task(uow, caller, workspace_id, task_id, write=True)


async def _task(
    uow: UnitOfWork, caller: Caller, workspace_id: str, task_id: str, *, write: bool
) -> Task:
    try:
        await require_role(uow, caller, workspace_id, write=write)
    except errors.NotFound:
        raise task_not_found() from None
    task = await uow.tasks.get(workspace_id, task_id)
    if task is None or task.kind is not TaskKind.EXPERT:
        raise task_not_found()
    return task
