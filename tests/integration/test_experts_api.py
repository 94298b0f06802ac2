"""ExpertService over a real server (SQLite and PostgreSQL): what clients see.

Experts are the embedded defaults (``echo``, ``extract``, ``summarize``), tasks
run on the local development provider; the runner runs as in production.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.events.v1 import event_pb2
from cortex.experts.v1 import expert_service_pb2 as xpb
from cortex.experts.v1 import task_pb2
from google.protobuf import json_format
from grpc_health.v1 import health_pb2
from support.clients import Account, auth_pb, workspace_pb
from support.inprocess import running_app
from support.rpc import details
from support.task_client import (
    CANCELLED,
    INPUT_REQUIRED,
    QUEUED,
    SUCCEEDED,
    TERMINAL,
    TasksClient,
    new_request_id,
    output_text,
    struct,
    until_state,
    watch_to_end,
    words,
)
from support.tasks import TEST_EXPERTS
from support.tool_sources import RecordingTools

EDITOR, VIEWER = 2, 3
ASK = json.dumps(
    {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
)


@pytest.fixture
async def api(db_url: str, tmp_path: Path) -> AsyncIterator[TasksClient]:
    async with running_app(
        tmp_path, database_url=db_url, events_heartbeat=0.3, access_token_ttl=60
    ) as running:
        client = TasksClient(running.address)
        try:
            yield client
        finally:
            await client.close()


async def _owner(api: TasksClient) -> tuple[Account, str]:
    account = await api.register()
    return account, str((await api.first_workspace(account)).name)


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in details(error)["BadRequest"].field_violations]


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(details(error)["ErrorInfo"].reason)


# --- experts ------------------------------------------------------------------------


async def test_experts_are_listed_by_name_page_by_page_and_each_can_be_read(
    api: TasksClient,
) -> None:
    alice, _ = await _owner(api)
    pages, token = [], ""
    while True:
        page = await api.experts.ListExperts(
            xpb.ListExpertsRequest(page_size=1, page_token=token), metadata=alice.metadata()
        )
        pages.append([e.name for e in page.experts])
        token = page.next_page_token
        if not token:
            break
    names = [name for page in pages for name in page]
    echo = (
        await api.experts.GetExpert(
            xpb.GetExpertRequest(name="experts/echo"), metadata=alice.metadata()
        )
    ).expert

    assert all(len(page) == 1 for page in pages)
    assert names == sorted(names)
    assert {"experts/echo", "experts/extract", "experts/summarize"} <= set(names)
    assert echo.display_name
    assert echo.description
    assert echo.default_max_attempts >= 1
    assert echo.attempt_timeout.seconds > 0
    assert echo.max_steps > 0
    assert "text" in json_format.MessageToDict(echo.input_schema)["properties"]


async def test_expert_errors_name_the_field_or_the_reason(api: TasksClient) -> None:
    alice, _ = await _owner(api)
    missing = await _error(
        api.experts.GetExpert(xpb.GetExpertRequest(name="experts/nope"), metadata=alice.metadata())
    )
    malformed = await _error(
        api.experts.GetExpert(xpb.GetExpertRequest(name="nope"), metadata=alice.metadata())
    )
    negative = await _error(
        api.experts.ListExperts(xpb.ListExpertsRequest(page_size=-1), metadata=alice.metadata())
    )
    forged = await _error(
        api.experts.ListExperts(
            xpb.ListExpertsRequest(page_token="forged"), metadata=alice.metadata()
        )
    )
    anonymous = await _error(api.experts.ListExperts(xpb.ListExpertsRequest()))

    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert _reason(missing) == "EXPERT_NOT_FOUND"
    assert malformed.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(malformed) == ["name"]
    assert _fields(negative) == ["page_size"]
    assert _reason(forged) == "INVALID_PAGE_TOKEN"
    assert anonymous.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_expert_service_is_serving_in_health(api: TasksClient) -> None:
    status = await api.health_status("cortex.experts.v1.ExpertService")
    assert status == health_pb2.HealthCheckResponse.SERVING


# --- creating tasks -------------------------------------------------------------------


async def test_a_created_task_runs_to_success_with_its_output(api: TasksClient) -> None:
    alice, workspace = await _owner(api)
    created = await api.create(alice, workspace, "hello there")
    done = await until_state(api, alice, created.name, TERMINAL)

    assert created.name.startswith(f"{workspace}/tasks/")
    assert created.creator == alice.user
    assert created.last_sequence >= 1
    assert done.state == SUCCEEDED, done.error
    assert "hello there" in json_format.MessageToDict(done.output)["text"]
    assert done.attempt_count == 1
    assert done.attempts[0].end_time.seconds > 0
    assert done.complete_time.seconds > 0


async def test_a_watch_shows_the_progress_of_each_model_turn_in_its_sequence(
    api: TasksClient,
) -> None:
    alice, workspace = await _owner(api)
    created = await api.create(alice, workspace, "hello there")
    watched = await watch_to_end(api, alice, created.name)

    kinds = [f.WhichOneof("frame") for f in watched.frames]
    assert watched.error is None
    assert watched.sequences == list(range(1, len(watched.frames) + 1))
    progress = [f for f in watched.frames if f.WhichOneof("frame") == "progress"]
    assert len(progress) == 1  # one model turn: it answered without calling tools
    report = progress[0].progress
    assert report.attempt == 1
    assert report.message.startswith("step 1 of 8, ")
    assert "tokens used" in report.message
    assert report.fraction == pytest.approx(1 / 8)
    assert report.report_time.seconds > 0
    # After the text it reports on, before the snapshot of the end.
    assert kinds.index("output_delta") < kinds.index("progress") < len(kinds) - 1
    assert watched.last_task is not None
    assert watched.last_task.state == SUCCEEDED


async def test_a_cancelled_running_task_keeps_its_partial_output_in_get_task(
    db_url: str, tmp_path: Path
) -> None:
    async with running_app(
        tmp_path, database_url=db_url, local_llm_delay=0.05, access_token_ttl=60
    ) as running:
        api = TasksClient(running.address)
        alice, workspace = await _owner(api)
        created = await api.create(alice, workspace, words(200))  # 10 s of words
        stream = api.watch(alice, created.name)
        async with asyncio.timeout(20):
            while (await stream.read()).WhichOneof("frame") != "output_delta":
                pass
        stream.cancel()
        await api.cancel(alice, created.name)
        done = await until_state(api, alice, created.name, TERMINAL)
        journal = await watch_to_end(api, alice, created.name, created.last_sequence)
        await api.close()

    assert done.state == CANCELLED
    kept = json_format.MessageToDict(done.output)["text"]
    assert kept.startswith("[local-dev] w0")
    assert len(kept) < len(words(200))
    assert kept == output_text(journal.frames)  # what the watch showed, nothing more


async def test_invalid_tasks_are_refused_with_a_violation_per_field(api: TasksClient) -> None:
    alice, workspace = await _owner(api)

    def create(**task: Any) -> Any:
        return api.experts.CreateTask(
            xpb.CreateTaskRequest(parent=workspace, task=task_pb2.Task(**task)),
            metadata=alice.metadata(),
        )

    no_expert = await _error(create(input=struct({"text": "x"})))
    bad_input = await _error(create(expert="experts/echo", input=struct({"text": 5})))
    too_many = await _error(
        create(expert="experts/echo", input=struct({"text": "x"}), max_attempts=11)
    )
    unknown = await _error(create(expert="experts/nope", input=struct({"text": "x"})))
    bad_parent = await _error(
        api.experts.CreateTask(
            xpb.CreateTaskRequest(parent="nope", task=task_pb2.Task(expert="experts/echo")),
            metadata=alice.metadata(),
        )
    )

    assert no_expert.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(no_expert) == ["task.expert"]
    assert bad_input.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert all(f.startswith("task.input") for f in _fields(bad_input))
    assert _fields(too_many) == ["task.max_attempts"]
    assert unknown.code() is grpc.StatusCode.NOT_FOUND
    assert _reason(unknown) == "EXPERT_NOT_FOUND"
    assert _fields(bad_parent) == ["parent"]


async def test_a_repeated_request_id_returns_the_first_task_and_a_different_task_is_aborted(
    api: TasksClient,
) -> None:
    alice, workspace = await _owner(api)
    key = new_request_id()
    first = await api.create(alice, workspace, "once", request_id=key)
    again = await api.create(alice, workspace, "once", request_id=key)
    other = await _error(api.create(alice, workspace, "something else", request_id=key))
    listed = await api.experts.ListTasks(
        xpb.ListTasksRequest(parent=workspace), metadata=alice.metadata()
    )

    assert again.name == first.name
    assert other.code() is grpc.StatusCode.ABORTED
    assert _reason(other) == "REQUEST_ID_REUSED"
    assert [t.name for t in listed.tasks] == [first.name]


# --- tenancy and roles ------------------------------------------------------------------


async def test_another_tenants_task_is_not_found_whatever_is_asked(api: TasksClient) -> None:
    alice, workspace = await _owner(api)
    bob, _ = await _owner(api)
    task = await api.create(alice, workspace, "private")
    calls = {
        "get": api.get(bob, task.name),
        "cancel": api.cancel(bob, task.name),
        "provide": api.provide(bob, task.name, "r", {"answer": "x"}),
        "watch": watch_to_end(api, bob, task.name),
    }
    errors = {}
    for name, call in calls.items():
        if name == "watch":
            errors[name] = (await call).error
        else:
            errors[name] = await _error(call)
    create = await _error(api.create(bob, workspace, "in alice's workspace"))
    listing = await _error(
        api.experts.ListTasks(xpb.ListTasksRequest(parent=workspace), metadata=bob.metadata())
    )

    for name, error in errors.items():
        assert error is not None, name
        assert error.code() is grpc.StatusCode.NOT_FOUND, name
        assert _reason(error) == "TASK_NOT_FOUND", name
    assert _reason(create) == "WORKSPACE_NOT_FOUND"
    assert _reason(listing) == "WORKSPACE_NOT_FOUND"


async def test_a_viewer_reads_tasks_but_may_not_create_or_cancel_them(api: TasksClient) -> None:
    alice, workspace = await _owner(api)
    viewer = await api.register()
    await api.workspaces.AddWorkspaceMember(
        workspace_pb.AddWorkspaceMemberRequest(parent=workspace, email=viewer.email, role=VIEWER),
        metadata=alice.metadata(),
    )
    task = await api.create(alice, workspace, "shared")
    read = await api.get(viewer, task.name)
    create = await _error(api.create(viewer, workspace, "mine"))
    cancel = await _error(api.cancel(viewer, task.name))

    assert read.name == task.name
    assert create.code() is grpc.StatusCode.PERMISSION_DENIED
    assert _reason(create) == _reason(cancel) == "EDITOR_REQUIRED"


# --- listing ------------------------------------------------------------------------------


async def test_tasks_are_listed_newest_first_page_by_page_and_filtered(api: TasksClient) -> None:
    alice, workspace = await _owner(api)
    made = [await api.create(alice, workspace, f"task {i}") for i in range(5)]
    for task in made:
        await until_state(api, alice, task.name, TERMINAL)
    seen, token, pages = [], "", 0
    while True:
        page = await api.experts.ListTasks(
            xpb.ListTasksRequest(parent=workspace, page_size=2, page_token=token),
            metadata=alice.metadata(),
        )
        pages += 1
        seen.extend(t.name for t in page.tasks)
        token = page.next_page_token
        if not token:
            break
    succeeded = await api.experts.ListTasks(
        xpb.ListTasksRequest(parent=workspace, state=SUCCEEDED, expert="experts/echo"),
        metadata=alice.metadata(),
    )
    none = await api.experts.ListTasks(
        xpb.ListTasksRequest(parent=workspace, state=CANCELLED), metadata=alice.metadata()
    )
    other_filter = await _error(
        api.experts.ListTasks(
            xpb.ListTasksRequest(parent=workspace, page_token=token or "x", state=CANCELLED),
            metadata=alice.metadata(),
        )
    )
    bad_expert = await _error(
        api.experts.ListTasks(
            xpb.ListTasksRequest(parent=workspace, expert="echo"), metadata=alice.metadata()
        )
    )

    assert seen == [t.name for t in reversed(made)]
    assert pages == 3
    assert len(succeeded.tasks) == 5
    assert list(none.tasks) == []
    assert _reason(other_filter) == "INVALID_PAGE_TOKEN"
    assert _fields(bad_expert) == ["expert"]


# --- cancel and input -------------------------------------------------------------------------


async def test_cancel_is_idempotent_and_a_finished_task_cannot_be_cancelled(
    api: TasksClient,
) -> None:
    alice, workspace = await _owner(api)
    finished = await api.create(alice, workspace, "quick")
    await until_state(api, alice, finished.name, TERMINAL)
    waiting = await api.create(alice, workspace, f"/ask {ASK}")
    await until_state(api, alice, waiting.name, {INPUT_REQUIRED})

    cancelled = await api.cancel(alice, waiting.name)  # waiting: cancelled at once
    again = await api.cancel(alice, waiting.name)
    completed = await _error(api.cancel(alice, finished.name))

    assert cancelled.state == CANCELLED
    assert again.state == CANCELLED
    assert completed.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(completed) == "TASK_ALREADY_COMPLETED"


async def test_input_is_refused_unless_it_answers_the_pending_request(api: TasksClient) -> None:
    alice, workspace = await _owner(api)
    quick = await api.create(alice, workspace, "no question")
    await until_state(api, alice, quick.name, TERMINAL)
    asking = await api.create(alice, workspace, f"/ask {ASK}")
    waiting = await until_state(api, alice, asking.name, {INPUT_REQUIRED})
    request = waiting.input_request

    not_waiting = await _error(api.provide(alice, quick.name, "r", {"answer": "x"}))
    mismatch = await _error(api.provide(alice, asking.name, "not-it", {"answer": "x"}))
    wrong_shape = await _error(api.provide(alice, asking.name, request.id, {"answer": 1}))
    resumed = await api.provide(alice, asking.name, request.id, {"answer": "yes"})
    twice = await _error(api.provide(alice, asking.name, request.id, {"answer": "yes"}))
    done = await until_state(api, alice, asking.name, TERMINAL)

    assert _reason(not_waiting) == "TASK_NOT_WAITING"
    assert _reason(mismatch) == "INPUT_REQUEST_MISMATCH"
    assert wrong_shape.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert all(f.startswith("input") for f in _fields(wrong_shape))
    assert resumed.state != INPUT_REQUIRED
    assert twice.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert done.state == SUCCEEDED, done.error


# --- watching over the wire ------------------------------------------------------------------


async def test_a_watch_past_the_journal_end_is_invalid_and_one_of_a_done_task_closes(
    api: TasksClient,
) -> None:
    alice, workspace = await _owner(api)
    task = await api.create(alice, workspace, "watch me")
    done = await until_state(api, alice, task.name, TERMINAL)
    beyond = await watch_to_end(api, alice, task.name, done.last_sequence + 1)
    at_end = await watch_to_end(api, alice, task.name, done.last_sequence)
    from_zero = await watch_to_end(api, alice, task.name)
    replay = await watch_to_end(api, alice, task.name, task.last_sequence)

    assert beyond.error is not None
    assert beyond.error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(beyond.error) == ["after_sequence"]
    assert at_end.error is None
    assert at_end.frames == []
    assert from_zero.error is None
    assert len(from_zero.frames) == 1
    assert from_zero.frames[0].task.state == SUCCEEDED
    assert from_zero.frames[0].sequence == done.last_sequence
    assert replay.error is None
    assert replay.sequences == list(range(task.last_sequence + 1, done.last_sequence + 1))


async def test_logging_out_ends_a_watch_with_unauthenticated(db_url: str, tmp_path: Path) -> None:
    async with running_app(
        tmp_path, database_url=db_url, events_heartbeat=0.3, local_llm_delay=0.2
    ) as running:
        api = TasksClient(running.address)
        alice, workspace = await _owner(api)
        task = await api.create(alice, workspace, words(60))
        stream = api.watch(alice, task.name)
        await stream.read()
        await api.auth.Logout(auth_pb.LogoutRequest(), metadata=alice.metadata())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(10):
                while True:
                    frame = await stream.read()
                    assert frame is not grpc.aio.EOF
        await api.close()
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert _reason(caught.value) == "SESSION_REVOKED"


async def test_a_draining_server_ends_a_watch_with_unavailable_and_its_resume_point(
    db_url: str, tmp_path: Path
) -> None:
    async with running_app(
        tmp_path,
        database_url=db_url,
        events_heartbeat=0.3,
        local_llm_delay=0.2,
        shutdown_grace=5.0,
    ) as running:
        api = TasksClient(running.address)
        alice, workspace = await _owner(api)
        task = await api.create(alice, workspace, words(60))
        stream = api.watch(alice, task.name, task.last_sequence)
        seen = []
        async with asyncio.timeout(20):
            while len(seen) < 2:
                frame = await stream.read()
                if frame.WhichOneof("frame") != "heartbeat":
                    seen.append(frame)
        draining = asyncio.ensure_future(running.drain())
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(10):
                while True:
                    frame = await stream.read()
                    assert frame is not grpc.aio.EOF
                    if frame.WhichOneof("frame") != "heartbeat":
                        seen.append(frame)
        await draining
        await api.close()
    info = details(caught.value)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert info["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"
    assert "RetryInfo" in info
    assert info["ErrorInfo"].metadata["after_sequence"] == str(seen[-1].sequence)


# --- task events --------------------------------------------------------------------------------


async def test_task_changes_are_typed_events_on_the_workspace_stream(api: TasksClient) -> None:
    alice, workspace = await _owner(api)
    stream = api.subscribe(alice, workspaces=[workspace])
    await stream.read()  # opened
    task = await api.create(alice, workspace, "evented")
    seen: list[event_pb2.Event] = []
    async with asyncio.timeout(20):
        while not (seen and seen[-1].task_state_changed.task.state in TERMINAL):
            frame = await stream.read()
            if frame.WhichOneof("frame") == "event" and frame.event.HasField("task_state_changed"):
                seen.append(frame.event)
    stream.cancel()

    assert all(e.type == event_pb2.EVENT_TYPE_TASK_STATE_CHANGED for e in seen)
    assert all(e.workspace == workspace for e in seen)
    changes = [(e.task_state_changed.previous_state, e.task_state_changed.task.state) for e in seen]
    assert changes[0] == (task_pb2.TASK_STATE_UNSPECIFIED, task_pb2.TASK_STATE_QUEUED)
    assert changes[-1][1] == SUCCEEDED
    assert all(e.task_state_changed.task.name == task.name for e in seen)
    assert seen[0].actor == alice.user


async def test_each_approval_of_one_model_turn_is_its_own_request_answered_once(
    db_url: str, tmp_path: Path
) -> None:
    tools = RecordingTools()
    text = '/call testing.guarded {"door": "blue"}\n/call testing.guarded {"door": "red"}'
    async with running_app(
        tmp_path, database_url=db_url, tool_sources=[tools], experts=TEST_EXPERTS,
        access_token_ttl=60,
    ) as running:  # fmt: skip
        api = TasksClient(running.address)
        alice, workspace = await _owner(api)
        created = await api.create(alice, workspace, text, expert="experts/guarded")
        first = (await until_state(api, alice, created.name, {INPUT_REQUIRED})).input_request
        second = (await api.provide(alice, created.name, first.id, {"approve": True})).input_request
        stale = await _error(api.provide(alice, created.name, first.id, {"approve": True}))
        resumed = await api.provide(alice, created.name, second.id, {"approve": False})
        twice = await _error(api.provide(alice, created.name, second.id, {"approve": False}))
        done = await until_state(api, alice, created.name, TERMINAL)
        watched = await watch_to_end(api, alice, created.name, created.last_sequence)
        await api.close()

    assert first.message.endswith("(1 of 2)")
    assert json_format.MessageToDict(first.tool_call.arguments) == {"door": "blue"}
    assert second.message.endswith("(2 of 2)")
    assert json_format.MessageToDict(second.tool_call.arguments) == {"door": "red"}
    assert second.id != first.id
    assert second.expire_time.seconds > 0
    assert _reason(stale) == "INPUT_REQUEST_MISMATCH"
    assert resumed.state == QUEUED
    assert _reason(twice) == "TASK_NOT_WAITING"
    assert done.state == SUCCEEDED, done.error
    assert tools.calls["guarded"] == 1  # blue approved, red denied
    assert "TOOL_DENIED" in json_format.MessageToDict(done.output)["text"]
    asked = [
        f.task.input_request.id for f in watched.frames
        if f.WhichOneof("frame") == "task" and f.task.state == INPUT_REQUIRED
    ]  # fmt: skip
    assert asked == [first.id, second.id]  # each request once, in order, on the watch
