"""The task runtime over real SQLite and PostgreSQL: use cases, runners under the
supervisor, the tool loop with the local development provider and real tools."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest
from support.tasks import FAST, harness, in_state, seed, wait_for

from cortex_core import errors
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.domain.events import TaskStateChanged
from cortex_core.domain.identity import Role
from cortex_core.domain.paging import PageRequest
from cortex_core.domain.tasks import (
    WORKER_LOST,
    WORKER_SHUTDOWN,
    JournalKind,
    Task,
    TaskState,
)
from cortex_core.domain.tools import ToolResult

DONE = in_state(TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


async def _journal(h: object, task_id: str) -> list[object]:
    read = await h.tasks.read_journal(task_id, 0, 1000)  # type: ignore[attr-defined]
    return list(read.entries)


async def test_a_task_runs_once_to_succeeded_and_its_journal_tells_every_step(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        created = await h.tasks.create(caller, "w1", "echo", {"text": "hello there"})
        assert created.state is TaskState.QUEUED
        assert created.last_sequence == 1
        await h.runner().start()
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.SUCCEEDED
        assert dict(task.output or {}) == {"text": "[local-dev] hello there"}
        assert [a.number for a in task.attempts] == [1]
        assert task.attempts[0].end_time is not None
        assert task.attempts[0].error is None
        entries = await _journal(h, task.id)
        assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
        assert task.last_sequence == entries[-1].sequence
        states = [e.body.state for e in entries if e.kind is JournalKind.TASK]
        assert states == [TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED]
        text = "".join(e.body for e in entries if e.kind is JournalKind.OUTPUT_DELTA)
        assert text == "[local-dev] hello there"
        changes = [e for e in h.published if isinstance(e, TaskStateChanged)]
        assert changes[0].previous_state is None
        assert changes[-1].task.state is TaskState.SUCCEEDED


async def test_retryable_failures_go_back_to_queued_until_an_attempt_succeeds(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "echo", {"text": "/fail 2"}, max_attempts=3)
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.SUCCEEDED
        assert [a.error.reason if a.error else "" for a in task.attempts] == [
            "PROVIDER_UNAVAILABLE",
            "PROVIDER_UNAVAILABLE",
            "",
        ]
        queued_again = [
            e.body
            for e in await _journal(h, task.id)
            if e.kind is JournalKind.TASK and e.body.state is TaskState.QUEUED and e.body.attempts
        ]
        assert len(queued_again) == 2
        assert all(t.next_attempt_time is not None and t.error is not None for t in queued_again)


async def test_a_task_fails_when_its_attempts_are_spent(database: SqlDatabase) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "echo", {"text": "/fail 9"}, max_attempts=2)
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.FAILED
        assert task.attempt_count == 2
        assert task.error is not None
        assert task.error.reason == "PROVIDER_UNAVAILABLE"
        assert task.complete_time is not None


async def test_an_attempt_that_outlives_its_timeout_is_retried_then_fails(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database, delay=0.05) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "hasty", {"text": " ".join(["w"] * 40)})
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.FAILED
        assert [a.error.reason for a in task.attempts if a.error] == ["ATTEMPT_TIMEOUT"] * 2


async def test_output_that_does_not_match_the_output_schema_fails_the_attempt(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        await h.runner().start()
        bad = await h.tasks.create(
            caller, "w1", "extract", {"text": '/output {"nope": 1}'}, max_attempts=2
        )
        good = await h.tasks.create(
            caller, "w1", "extract", {"text": '/output {"fields": {"city": "Oslo"}}'}
        )
        failed = await wait_for(h.tasks, caller, bad.id, DONE)
        assert failed.state is TaskState.FAILED
        assert [a.error.reason for a in failed.attempts if a.error] == [
            "OUTPUT_SCHEMA_MISMATCH"
        ] * 2
        done = await wait_for(h.tasks, caller, good.id, DONE)
        assert done.state is TaskState.SUCCEEDED
        assert dict(done.output or {}) == {"fields": {"city": "Oslo"}}


async def test_a_queued_task_is_cancelled_at_once_and_stays_cancelled(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        created = await h.tasks.create(caller, "w1", "echo", {"text": "never run"})
        cancelled = await h.tasks.cancel(caller, "w1", created.id)
        assert cancelled.state is TaskState.CANCELLED
        assert cancelled.complete_time is not None
        assert (await h.tasks.cancel(caller, "w1", created.id)).state is TaskState.CANCELLED
        await h.runner().start()
        await asyncio.sleep(0.6)
        task = await h.tasks.get(caller, "w1", created.id)
        assert task.state is TaskState.CANCELLED
        assert task.attempt_count == 0


async def test_cancelling_a_running_task_stops_it_keeps_its_partial_output_and_never_succeeds(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database, delay=0.05) as h:
        await h.runner().start()
        words = " ".join(f"w{i}" for i in range(200))  # 10 s of words
        created = await h.tasks.create(caller, "w1", "echo", {"text": words})
        await wait_for(h.tasks, caller, created.id, lambda t: t.last_sequence >= 4)
        returned = await h.tasks.cancel(caller, "w1", created.id)
        assert returned.state is TaskState.RUNNING
        assert returned.cancel_requested
        task = await wait_for(h.tasks, caller, created.id, DONE, within=5)
        assert task.state is TaskState.CANCELLED
        partial = "".join(
            e.body for e in await _journal(h, task.id) if e.kind is JournalKind.OUTPUT_DELTA
        )
        assert partial.startswith("[local-dev] w0")
        assert len(partial) < len(words)
        assert dict(task.output or {}) == {"text": partial}  # kept, as the journal showed it
        await asyncio.sleep(1.0)  # 20 more words, had the model stream stayed open
        later = await h.tasks.get(caller, "w1", created.id)
        assert later.state is TaskState.CANCELLED
        assert later.last_sequence == task.last_sequence  # nothing written after the end
        with pytest.raises(errors.FailedPrecondition) as refused:
            await h.tasks.provide_input(caller, "w1", created.id, "x", {})
        assert refused.value.reason == "TASK_NOT_WAITING"


async def test_a_finished_task_cannot_be_cancelled(database: SqlDatabase) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "echo", {"text": "quick"})
        await wait_for(h.tasks, caller, created.id, DONE)
        with pytest.raises(errors.FailedPrecondition) as refused:
            await h.tasks.cancel(caller, "w1", created.id)
        assert refused.value.reason == "TASK_ALREADY_COMPLETED"


async def test_a_tool_that_needs_approval_waits_without_a_worker_and_resumes_once_across_a_restart(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        first = h.runner("worker-a")
        await first.start()
        created = await h.tasks.create(
            caller, "w1", "guarded", {"text": '/call testing.guarded {"door": "blue"}'}
        )
        waiting = await wait_for(h.tasks, caller, created.id, in_state(TaskState.INPUT_REQUIRED))
        request = waiting.input_request
        assert request is not None
        assert request.tool_call is not None
        assert request.tool_call.tool == "testing.guarded"
        assert dict(request.answer_schema)["required"] == ["approve"]
        assert waiting.lease_owner == ""
        assert first.runner.running == 0
        assert h.tools.calls["guarded"] == 0
        await first.stop()  # the process goes away while the task waits

        with pytest.raises(errors.InvalidArgument) as bad:
            await h.tasks.provide_input(caller, "w1", created.id, request.id, {"approve": "yes"})
        assert bad.value.violations[0].field == "input.approve"
        with pytest.raises(errors.FailedPrecondition) as wrong:
            await h.tasks.provide_input(caller, "w1", created.id, "other", {"approve": True})
        assert wrong.value.reason == "INPUT_REQUEST_MISMATCH"
        queued = await h.tasks.provide_input(
            caller, "w1", created.id, request.id, {"approve": True}
        )
        assert queued.state is TaskState.QUEUED
        assert queued.input_request is None
        with pytest.raises(errors.FailedPrecondition) as twice:
            await h.tasks.provide_input(caller, "w1", created.id, request.id, {"approve": True})
        assert twice.value.reason == "TASK_NOT_WAITING"

        await h.runner("worker-b").start()
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.SUCCEEDED
        assert h.tools.calls["guarded"] == 1
        assert "testing.guarded" in dict(task.output or {})["text"]
        results = [e.body for e in await _journal(h, task.id) if e.kind is JournalKind.TOOL_RESULT]
        assert [r.tool for r in results if isinstance(r, ToolResult)] == ["testing.guarded"]
        assert task.failed_attempts == 0


async def test_a_denied_call_is_answered_as_denied_and_the_task_goes_on(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "guarded", {"text": "/call testing.guarded"})
        waiting = await wait_for(h.tasks, caller, created.id, in_state(TaskState.INPUT_REQUIRED))
        assert waiting.input_request is not None
        await h.tasks.provide_input(
            caller, "w1", created.id, waiting.input_request.id, {"approve": False}
        )
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.SUCCEEDED
        assert h.tools.calls["guarded"] == 0
        assert "TOOL_DENIED" in dict(task.output or {})["text"]


TWO_APPROVALS = "\n".join(
    [
        '/call testing.guarded {"door": "blue"}',
        '/call testing.guarded {"door": "red"}',
        '/call testing.echo {"door": "open"}',
    ]
)


async def _approval(h: object, caller: object, task_id: str, previous: str = "") -> object:
    waiting = await wait_for(
        h.tasks,  # type: ignore[attr-defined]
        caller,  # type: ignore[arg-type]
        task_id,
        lambda t: (
            t.state is TaskState.INPUT_REQUIRED
            and t.input_request is not None
            and t.input_request.id != previous
        ),
    )
    assert waiting.input_request is not None
    return waiting.input_request


async def test_every_call_of_a_turn_that_needs_approval_is_asked_one_after_another(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "guarded", {"text": TWO_APPROVALS})
        first = await _approval(h, caller, created.id)
        assert first.tool_call.arguments == {"door": "blue"}  # type: ignore[attr-defined]
        assert first.message.endswith("(1 of 2)")  # type: ignore[attr-defined]
        assert h.tools.calls["echo"] == 1  # the call needing nobody ran meanwhile
        # Two answers to the same request at once: exactly one is taken.
        answers = await asyncio.gather(
            *(
                h.tasks.provide_input(caller, "w1", created.id, first.id, {"approve": True})  # type: ignore[attr-defined]
                for _ in range(2)
            ),
            return_exceptions=True,
        )
        taken = [a for a in answers if isinstance(a, Task)]
        assert len(taken) == 1
        assert taken[0].state is TaskState.INPUT_REQUIRED
        refused = [a for a in answers if isinstance(a, errors.FailedPrecondition)]
        assert [r.reason for r in refused] == ["INPUT_REQUEST_MISMATCH"]
        second = taken[0].input_request
        assert second is not None
        assert second.id != first.id  # type: ignore[attr-defined]
        assert second.tool_call is not None
        assert second.tool_call.arguments == {"door": "red"}
        assert second.message.endswith("(2 of 2)")
        assert h.tools.calls["guarded"] == 0  # nothing runs before every answer is in
        with pytest.raises(errors.FailedPrecondition) as stale:
            await h.tasks.provide_input(caller, "w1", created.id, first.id, {"approve": True})  # type: ignore[attr-defined]
        assert stale.value.reason == "INPUT_REQUEST_MISMATCH"
        queued = await h.tasks.provide_input(
            caller, "w1", created.id, second.id, {"approve": False}
        )
        assert queued.state is TaskState.QUEUED
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.SUCCEEDED
        assert h.tools.calls["guarded"] == 1  # blue approved, red denied
        text = dict(task.output or {})["text"]
        assert "blue" in text
        assert "TOOL_DENIED" in text
        results = [e.body for e in await _journal(h, task.id) if e.kind is JournalKind.TOOL_RESULT]
        assert sorted(r.tool for r in results if isinstance(r, ToolResult)) == [
            "testing.echo",
            "testing.guarded",
        ]
        assert task.failed_attempts == 0


async def test_an_unanswered_second_approval_expires_and_fails_the_task_saying_what_was_asked(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    # The first request lasts the runner's 60 s; the second, asked by ProvideTaskInput, 0.5 s.
    async with harness(database, input_ttl=0.5) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "guarded", {"text": TWO_APPROVALS})
        first = await _approval(h, caller, created.id)
        answered = await h.tasks.provide_input(
            caller,
            "w1",
            created.id,
            first.id,
            {"approve": True},  # type: ignore[attr-defined]
        )
        second = answered.input_request
        assert second is not None
        task = await wait_for(h.tasks, caller, created.id, DONE, within=5)
        assert task.state is TaskState.FAILED
        assert task.error is not None
        assert task.error.reason == "INPUT_REQUEST_EXPIRED"
        assert "red" in task.error.message
        assert dict(task.error.metadata) == {"input_request_id": second.id}
        assert task.complete_time is not None
        assert task.complete_time >= second.expire_time
        assert h.tools.calls["guarded"] == 0


async def test_the_expert_itself_can_ask_and_the_answer_is_checked_against_its_schema(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    async with harness(database) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "echo", {"text": f"/ask {json.dumps(schema)}"})
        waiting = await wait_for(h.tasks, caller, created.id, in_state(TaskState.INPUT_REQUIRED))
        request = waiting.input_request
        assert request is not None
        assert request.tool_call is None
        assert dict(request.answer_schema) == schema
        with pytest.raises(errors.InvalidArgument) as bad:
            await h.tasks.provide_input(caller, "w1", created.id, request.id, {"town": "Oslo"})
        assert bad.value.violations[0].field == "input"
        await h.tasks.provide_input(caller, "w1", created.id, request.id, {"city": "Oslo"})
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.SUCCEEDED
        assert "Oslo" in dict(task.output or {})["text"]


async def test_an_unanswered_request_expires_on_time_and_fails_the_task(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database, policy=dataclasses.replace(FAST, input_ttl=0.5)) as h:
        await h.runner().start()
        created = await h.tasks.create(caller, "w1", "echo", {"text": "/ask"})
        waiting = await wait_for(h.tasks, caller, created.id, in_state(TaskState.INPUT_REQUIRED))
        assert waiting.input_request is not None
        task = await wait_for(h.tasks, caller, created.id, DONE, within=5)
        assert task.state is TaskState.FAILED
        assert task.error is not None
        assert task.error.reason == "INPUT_REQUEST_EXPIRED"
        assert task.complete_time is not None
        assert task.complete_time - waiting.input_request.expire_time < _seconds(2)
        with pytest.raises(errors.FailedPrecondition):
            await h.tasks.provide_input(
                caller, "w1", created.id, waiting.input_request.id, {"x": 1}
            )


def _seconds(value: float) -> object:
    from datetime import timedelta

    return timedelta(seconds=value)


async def test_a_request_id_returns_the_same_task_and_refuses_a_different_one(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        first = await h.tasks.create(caller, "w1", "echo", {"text": "a"}, request_id="r-1")
        again = await h.tasks.create(caller, "w1", "echo", {"text": "a"}, request_id="r-1")
        assert again.id == first.id
        with pytest.raises(errors.Aborted) as reused:
            await h.tasks.create(caller, "w1", "echo", {"text": "b"}, request_id="r-1")
        assert reused.value.reason == "REQUEST_ID_REUSED"
        concurrent = await asyncio.gather(
            *(
                h.tasks.create(caller, "w1", "echo", {"text": "c"}, request_id="r-2")
                for _ in range(5)
            )
        )
        assert len({t.id for t in concurrent}) == 1
        page = await h.tasks.list(caller, "w1", PageRequest(size=50))
        assert len(page.items) == 2


async def test_a_workspace_queue_has_a_cap(database: SqlDatabase) -> None:
    caller = await seed(database)
    async with harness(database, queue_limit=2) as h:
        for n in range(2):
            await h.tasks.create(caller, "w1", "echo", {"text": str(n)})
        with pytest.raises(errors.ResourceExhausted) as full:
            await h.tasks.create(caller, "w1", "echo", {"text": "one more"})
        assert full.value.reason == "TASK_QUEUE_FULL"
        assert full.value.retry_after


async def test_bad_input_names_the_fields_and_access_follows_the_workspace(
    database: SqlDatabase,
) -> None:
    owner = await seed(database)
    viewer = await seed(database, "u2", Role.VIEWER)
    outsider_db_user = await _outsider(database)
    async with harness(database) as h:
        with pytest.raises(errors.InvalidArgument) as bad:
            await h.tasks.create(owner, "w1", "echo", {"text": 3}, max_attempts=11)
        fields = {v.field for v in bad.value.violations}
        assert fields == {"task.input.text", "task.max_attempts"}
        with pytest.raises(errors.NotFound) as unknown:
            await h.tasks.create(owner, "w1", "nobody", {"text": "x"})
        assert unknown.value.reason == "EXPERT_NOT_FOUND"
        with pytest.raises(errors.PermissionDenied) as read_only:
            await h.tasks.create(viewer, "w1", "echo", {"text": "x"})
        assert read_only.value.reason == "EDITOR_REQUIRED"
        task = await h.tasks.create(owner, "w1", "echo", {"text": "x"})
        assert (await h.tasks.get(viewer, "w1", task.id)).id == task.id
        with pytest.raises(errors.PermissionDenied):
            await h.tasks.cancel(viewer, "w1", task.id)
        with pytest.raises(errors.NotFound) as hidden:
            await h.tasks.get(outsider_db_user, "w1", task.id)
        assert hidden.value.reason == "TASK_NOT_FOUND"


async def _outsider(database: SqlDatabase) -> object:
    from support.tasks import T0

    from cortex_core.domain.identity import Caller, User

    user = User("u9", "u9@example.com", "u9", "$argon2id$x", T0, T0)
    async with database.unit_of_work() as uow:
        await uow.users.add(user)
        await uow.commit()
    return Caller(user=user, session_id="s9", token_expire_time=T0.replace(year=2100))


async def test_listing_filters_by_state_and_expert_with_page_tokens_bound_to_them(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database) as h:
        made = [await h.tasks.create(caller, "w1", "echo", {"text": str(n)}) for n in range(3)]
        await h.tasks.cancel(caller, "w1", made[0].id)
        queued = await h.tasks.list(caller, "w1", PageRequest(size=1), state=TaskState.QUEUED)
        assert [t.id for t in queued.items] == [made[2].id]
        nxt = await h.tasks.list(
            caller,
            "w1",
            PageRequest.parse(1, queued.next_page_token),
            state=TaskState.QUEUED,
        )
        assert [t.id for t in nxt.items] == [made[1].id]
        with pytest.raises(errors.InvalidArgument) as forged:
            await h.tasks.list(caller, "w1", PageRequest.parse(1, queued.next_page_token))
        assert forged.value.reason == "INVALID_PAGE_TOKEN"
        assert (await h.tasks.list(caller, "w1", PageRequest(), expert_id="extract")).items == []


async def test_a_task_whose_worker_stops_answering_is_retried_by_another_worker(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database, delay=0.05) as h:
        lost = h.runner("worker-a")
        await lost.start()
        created = await h.tasks.create(caller, "w1", "echo", {"text": "a b c d e f g h i j"})
        await wait_for(h.tasks, caller, created.id, in_state(TaskState.RUNNING))
        await lost.stop()  # like a SIGKILL: no final write, the lease just runs out
        stopped = time.monotonic()
        await h.runner("worker-b").start()
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert time.monotonic() - stopped < 30
        assert task.state is TaskState.SUCCEEDED
        assert [a.worker for a in task.attempts] == ["worker-a", "worker-b"]
        assert task.attempts[0].error is not None
        assert task.attempts[0].error.reason == WORKER_LOST


async def test_a_draining_runner_hands_its_running_task_back_without_counting_a_failure(
    database: SqlDatabase,
) -> None:
    caller = await seed(database)
    async with harness(database, delay=0.05) as h:
        leaving = h.runner("worker-a")
        await leaving.start()
        created = await h.tasks.create(caller, "w1", "echo", {"text": " ".join(["w"] * 100)})
        await wait_for(h.tasks, caller, created.id, in_state(TaskState.RUNNING))
        await leaving.drain(0.2)
        handed = await h.tasks.get(caller, "w1", created.id)
        assert handed.state is TaskState.QUEUED
        assert handed.lease_owner == ""
        assert handed.attempts[0].error is not None
        assert handed.attempts[0].error.reason == WORKER_SHUTDOWN
        assert handed.failed_attempts == 0
        await h.runner("worker-b").start()
        task = await wait_for(h.tasks, caller, created.id, DONE)
        assert task.state is TaskState.SUCCEEDED
        assert task.attempt_count == 2


async def test_a_journal_can_be_read_from_any_point_and_waited_on(database: SqlDatabase) -> None:
    caller = await seed(database)
    async with harness(database, delay=0.02) as h:
        created = await h.tasks.create(caller, "w1", "echo", {"text": "one two three four"})
        opened = await h.tasks.open_journal(caller, "w1", created.id)
        seen: list[int] = []
        after = opened.last_sequence - 1
        await h.runner().start()
        deadline = time.monotonic() + 20
        while True:
            read = await h.tasks.read_journal(created.id, after, 2)
            assert not read.pruned_after(after)
            for entry in read.entries:
                seen.append(entry.sequence)
                after = entry.sequence
            last = read.entries[-1] if read.entries else None
            body = last.body if last is not None else None
            if isinstance(body, Task) and body.state.terminal:
                break
            if not read.entries:
                await h.tasks.wait_journal(created.id, after, 1.0)
            assert time.monotonic() < deadline
        assert seen == list(range(1, after + 1))
        with pytest.raises(errors.InvalidArgument):
            await h.tasks.read_journal(created.id, -1, 10)
