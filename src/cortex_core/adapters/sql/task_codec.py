"""Task values as the JSON text stored in the task tables and the journal.

Like ``tool_codec``, versionless: every key is optional on the way in, so a
field added later reads back with its default from rows written before it.
Tool calls and results reuse ``tool_codec``'s shapes.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from cortex_core.adapters.sql import tool_codec
from cortex_core.domain.tasks import (
    ErrorCategory,
    InputAnswer,
    InputRequest,
    JournalBody,
    JournalKind,
    Progress,
    Task,
    TaskAttempt,
    TaskError,
    TaskKind,
    TaskState,
    TranscriptEntry,
    frozen,
)
from cortex_core.domain.tools import ToolCall, ToolResult


def dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time_of(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def error_value(error: TaskError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "category": error.category.value,
        "reason": error.reason,
        "message": error.message,
        "metadata": dict(error.metadata),
    }


def error_of(value: dict[str, Any] | None) -> TaskError | None:
    if not value:
        return None
    return TaskError(
        ErrorCategory(value.get("category", ErrorCategory.INTERNAL.value)),
        value.get("reason", "INTERNAL"),
        value.get("message", ""),
        frozen(value.get("metadata")),
    )


def _call_value(call: ToolCall | None) -> Any:
    return json.loads(tool_codec.calls_json((call,)))[0] if call is not None else None


def _call_of(value: Any) -> ToolCall | None:
    return tool_codec.calls_of(dumps([value]))[0] if value else None


def _result_value(result: ToolResult | None) -> Any:
    text = tool_codec.result_json(result)
    return json.loads(text) if text else None


def _result_of(value: Any) -> ToolResult | None:
    return tool_codec.result_of(dumps(value)) if value else None


def request_value(request: InputRequest | None) -> dict[str, Any] | None:
    if request is None:
        return None
    return {
        "id": request.id,
        "message": request.message,
        "answer_schema": dict(request.answer_schema),
        "expire_time": _time(request.expire_time),
        "tool_call": _call_value(request.tool_call),
        "transcript": [
            {
                "role": e.role,
                "content": e.content,
                "tool_calls": json.loads(tool_codec.calls_json(e.tool_calls)),
                "tool_result": _result_value(e.tool_result),
            }
            for e in request.transcript
        ],
        "decided": json.loads(tool_codec.calls_json(request.decided)),
        "waiting": json.loads(tool_codec.calls_json(request.waiting)),
    }


def request_of(value: dict[str, Any] | None) -> InputRequest | None:
    if not value:
        return None
    expire = _time_of(value.get("expire_time"))
    assert expire is not None
    return InputRequest(
        id=value["id"],
        message=value.get("message", ""),
        answer_schema=frozen(value.get("answer_schema")),
        expire_time=expire,
        tool_call=_call_of(value.get("tool_call")),
        transcript=tuple(
            TranscriptEntry(
                role=e["role"],
                content=e.get("content", ""),
                tool_calls=tool_codec.calls_of(dumps(e.get("tool_calls") or [])),
                tool_result=_result_of(e.get("tool_result")),
            )
            for e in value.get("transcript") or []
        ),
        decided=tool_codec.calls_of(dumps(value.get("decided") or [])),
        waiting=tool_codec.calls_of(dumps(value.get("waiting") or [])),
    )


def answer_value(answer: InputAnswer | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    return {
        "request": request_value(answer.request),
        "answer": dict(answer.answer),
        "answer_time": _time(answer.answer_time),
    }


def answer_of(value: dict[str, Any] | None) -> InputAnswer | None:
    if not value:
        return None
    request = request_of(value.get("request"))
    when = _time_of(value.get("answer_time"))
    assert request is not None
    assert when is not None
    return InputAnswer(request, frozen(value.get("answer")), when)


def attempt_value(attempt: TaskAttempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "start_time": _time(attempt.start_time),
        "worker": attempt.worker,
        "end_time": _time(attempt.end_time),
        "error": error_value(attempt.error),
    }


def attempt_of(value: dict[str, Any]) -> TaskAttempt:
    start = _time_of(value.get("start_time"))
    assert start is not None
    return TaskAttempt(
        number=value["number"],
        start_time=start,
        worker=value.get("worker", ""),
        end_time=_time_of(value.get("end_time")),
        error=error_of(value.get("error")),
    )


def task_value(task: Task) -> dict[str, Any]:
    """The whole task, for a journal snapshot (the lease is not a client's business
    but is kept: it is what the worker held at that point)."""
    return {
        "id": task.id,
        "workspace_id": task.workspace_id,
        "expert_id": task.expert_id,
        "kind": task.kind.value,
        "state": task.state.value,
        "input": dict(task.input),
        "max_attempts": task.max_attempts,
        "creator_id": task.creator_id,
        "create_time": _time(task.create_time),
        "update_time": _time(task.update_time),
        "complete_time": _time(task.complete_time),
        "next_attempt_time": _time(task.next_attempt_time),
        "attempts": [attempt_value(a) for a in task.attempts],
        "output": dict(task.output) if task.output is not None else None,
        "error": error_value(task.error),
        "input_request": request_value(task.input_request),
        "request_id": task.request_id,
        "cancel_requested": task.cancel_requested,
        "last_sequence": task.last_sequence,
    }


def task_of(value: dict[str, Any]) -> Task:
    created, updated = _time_of(value["create_time"]), _time_of(value["update_time"])
    assert created is not None
    assert updated is not None
    output = value.get("output")
    return Task(
        id=value["id"],
        workspace_id=value["workspace_id"],
        expert_id=value.get("expert_id", ""),
        input=frozen(value.get("input")),
        max_attempts=value.get("max_attempts", 1),
        creator_id=value.get("creator_id", ""),
        create_time=created,
        update_time=updated,
        kind=TaskKind(value.get("kind", TaskKind.EXPERT.value)),
        state=TaskState(value["state"]),
        attempts=tuple(attempt_of(a) for a in value.get("attempts") or []),
        output=frozen(output) if output is not None else None,
        error=error_of(value.get("error")),
        complete_time=_time_of(value.get("complete_time")),
        next_attempt_time=_time_of(value.get("next_attempt_time")),
        input_request=request_of(value.get("input_request")),
        request_id=value.get("request_id", ""),
        cancel_requested=bool(value.get("cancel_requested", False)),
        last_sequence=value.get("last_sequence", 0),
    )


def body_json(kind: JournalKind, body: JournalBody) -> str:
    if kind is JournalKind.TASK:
        assert isinstance(body, Task)
        return dumps(task_value(body))
    if kind is JournalKind.PROGRESS:
        assert isinstance(body, Progress)
        return dumps({"fraction": body.fraction, "message": body.message})
    if kind is JournalKind.OUTPUT_DELTA:
        return dumps({"text": body})
    if kind is JournalKind.TOOL_CALL:
        assert isinstance(body, ToolCall)
        return dumps(_call_value(body))
    assert isinstance(body, ToolResult)
    return dumps(_result_value(body))


def body_of(kind: JournalKind, text: str) -> JournalBody:
    value = json.loads(text)
    if kind is JournalKind.TASK:
        return task_of(value)
    if kind is JournalKind.PROGRESS:
        return Progress(float(value.get("fraction", -1.0)), value.get("message", ""))
    if kind is JournalKind.OUTPUT_DELTA:
        return str(value.get("text", ""))
    if kind is JournalKind.TOOL_CALL:
        call = _call_of(value)
        assert call is not None
        return call
    result = _result_of(value)
    assert result is not None
    return result
