"""Task protos: the resource, its states, attempts and input requests, and the frames
of ``WatchTask`` (journal entries)."""

from __future__ import annotations

from datetime import datetime

from cortex.experts.v1 import expert_service_pb2 as spb
from cortex.experts.v1 import task_pb2
from google.protobuf import json_format
from google.rpc import status_pb2

from cortex_core import errors
from cortex_core.api import convert_conversations as cc
from cortex_core.api import status
from cortex_core.api.convert import timestamp
from cortex_core.domain import names
from cortex_core.domain.tasks import (
    ErrorCategory,
    InputRequest,
    JournalEntry,
    JournalKind,
    Progress,
    Task,
    TaskAttempt,
    TaskError,
    TaskState,
)
from cortex_core.domain.tools import ToolCall, ToolResult
from cortex_core.services.task_watch import JournalPruned

STATES: dict[TaskState, task_pb2.TaskState] = {
    TaskState.QUEUED: task_pb2.TASK_STATE_QUEUED,
    TaskState.RUNNING: task_pb2.TASK_STATE_RUNNING,
    TaskState.SUCCEEDED: task_pb2.TASK_STATE_SUCCEEDED,
    TaskState.FAILED: task_pb2.TASK_STATE_FAILED,
    TaskState.CANCELLED: task_pb2.TASK_STATE_CANCELLED,
    TaskState.INPUT_REQUIRED: task_pb2.TASK_STATE_INPUT_REQUIRED,
}
UNSPECIFIED = task_pb2.TASK_STATE_UNSPECIFIED
_STATE_OF: dict[int, TaskState] = {number: state for state, number in STATES.items()}


def state_from_proto(value: int) -> TaskState | None:
    """The filter of ``ListTasksRequest.state``: None for UNSPECIFIED (any state).

    Raises InvalidArgument (a violation on ``state``) for a number the contract
    does not define."""
    if value == task_pb2.TASK_STATE_UNSPECIFIED:
        return None
    found = _STATE_OF.get(value)
    if found is None:
        raise errors.InvalidArgument(
            "state is not a TaskState",
            [errors.FieldViolation("state", "must be a TaskState value")],
        )
    return found


def error_status(value: TaskError | None) -> status_pb2.Status | None:
    """A stored failure as the ``google.rpc.Status`` the contract sends (None: none,
    or a cancellation, which the contract reports by state, not as an error)."""
    if value is None or value.category is ErrorCategory.CANCELLED:
        return None
    return status.to_status_proto(value.exception())


def attempt(value: TaskAttempt) -> task_pb2.TaskAttempt:
    return task_pb2.TaskAttempt(
        attempt=value.number,
        start_time=timestamp(value.start_time),
        end_time=timestamp(value.end_time),
        error=error_status(value.error),
    )


def input_request(value: InputRequest) -> task_pb2.TaskInputRequest:
    return task_pb2.TaskInputRequest(
        id=value.id,
        message=value.message,
        answer_schema=cc.struct(value.answer_schema),
        expire_time=timestamp(value.expire_time),
        tool_call=cc.tool_call(value.tool_call) if value.tool_call is not None else None,
    )


def task(value: Task) -> task_pb2.Task:
    return task_pb2.Task(
        name=value.name,
        expert=value.expert,
        state=STATES[value.state],
        attempt_count=value.attempt_count,
        max_attempts=value.max_attempts,
        input=cc.struct(value.input),
        output=cc.struct(value.output) if value.output is not None else None,
        error=error_status(value.error),
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
        complete_time=timestamp(value.complete_time),
        creator=names.user_name(value.creator_id) if value.creator_id else "",
        input_request=input_request(value.input_request) if value.input_request else None,
        attempts=[attempt(a) for a in value.attempts],
        next_attempt_time=timestamp(value.next_attempt_time),
        last_sequence=value.last_sequence,
    )


def json_object(value: object) -> dict[str, object]:
    """A request's ``google.protobuf.Struct`` as a plain JSON object."""
    return dict(json_format.MessageToDict(value))  # type: ignore[arg-type]


def watch_frame(entry: JournalEntry) -> spb.WatchTaskResponse:
    """A journal entry as its ``WatchTask`` frame (with the entry's sequence)."""
    body = entry.body
    frame = spb.WatchTaskResponse(sequence=entry.sequence)
    if entry.kind is JournalKind.TASK and isinstance(body, Task):
        frame.task.CopyFrom(task(body))
    elif entry.kind is JournalKind.PROGRESS and isinstance(body, Progress):
        frame.progress.CopyFrom(
            spb.TaskProgress(
                fraction=body.fraction,
                message=body.message,
                attempt=entry.attempt,
                report_time=timestamp(entry.time),
            )
        )
    elif entry.kind is JournalKind.OUTPUT_DELTA and isinstance(body, str):
        frame.output_delta.CopyFrom(spb.TaskOutputDelta(text=body, attempt=entry.attempt))
    elif entry.kind is JournalKind.TOOL_CALL and isinstance(body, ToolCall):
        frame.tool_call.CopyFrom(cc.tool_call(body))
    elif entry.kind is JournalKind.TOOL_RESULT and isinstance(body, ToolResult):
        frame.tool_result.CopyFrom(cc.tool_result(body))
    else:
        raise TypeError(f"journal entry {entry.kind} holds a {type(body).__name__}")
    return frame


def pruned_frame(value: JournalPruned) -> spb.WatchTaskResponse:
    return spb.WatchTaskResponse(
        journal_pruned=spb.JournalPruned(oldest_sequence=value.oldest_sequence),
        sequence=value.oldest_sequence - 1,
    )


def heartbeat_frame(now: datetime) -> spb.WatchTaskResponse:
    return spb.WatchTaskResponse(heartbeat=spb.Heartbeat(server_time=timestamp(now)))
