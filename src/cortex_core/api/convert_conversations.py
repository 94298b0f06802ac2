"""Conversation, message, summary and context-window protos."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cortex.context.v1 import context_window_pb2, conversation_pb2, message_pb2, summary_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from google.protobuf import json_format, struct_pb2
from google.rpc import status_pb2

from cortex_core import errors
from cortex_core.api import status
from cortex_core.api.convert import timestamp
from cortex_core.domain import names
from cortex_core.domain.context_window import ContextWindow, Decision, Item, ItemKind
from cortex_core.domain.conversations import (
    Conversation,
    FinishReason,
    Message,
    MessageRole,
    Summary,
)
from cortex_core.domain.tools import ApprovalDecision, ToolCall, ToolCallState, ToolResult

_ROLES = {
    MessageRole.USER: message_pb2.MESSAGE_ROLE_USER,
    MessageRole.ASSISTANT: message_pb2.MESSAGE_ROLE_ASSISTANT,
    MessageRole.SYSTEM: message_pb2.MESSAGE_ROLE_SYSTEM,
    MessageRole.TOOL: message_pb2.MESSAGE_ROLE_TOOL,
}
FINISH_REASONS = {
    FinishReason.NONE: message_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: message_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: message_pb2.FINISH_REASON_LENGTH,
    FinishReason.CANCELLED: message_pb2.FINISH_REASON_CANCELLED,
    FinishReason.BUDGET: message_pb2.FINISH_REASON_BUDGET,
    FinishReason.ERROR: message_pb2.FINISH_REASON_ERROR,
    FinishReason.TOOL_CALLS: message_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.APPROVAL_REQUIRED: message_pb2.FINISH_REASON_APPROVAL_REQUIRED,
    FinishReason.STEP_LIMIT: message_pb2.FINISH_REASON_STEP_LIMIT,
}
_CALL_STATES = {
    ToolCallState.PENDING_APPROVAL: message_pb2.TOOL_CALL_STATE_PENDING_APPROVAL,
    ToolCallState.CALLED: message_pb2.TOOL_CALL_STATE_CALLED,
    ToolCallState.DENIED: message_pb2.TOOL_CALL_STATE_DENIED,
}
# The error class whose status code a tool result's reason gets (api/status.py maps it).
_TOOL_ERRORS: dict[str, type[errors.CortexError]] = {
    "TOOL_DENIED": errors.PermissionDenied,
    "TOOL_NOT_ALLOWED": errors.PermissionDenied,
    "TOOL_TIMEOUT": errors.DeadlineExceeded,
    "TOOL_UNAVAILABLE": errors.Unavailable,
    "TOOL_NOT_FOUND": errors.NotFound,
    "INVALID_TOOL_INPUT": errors.InvalidArgument,
    "TOOL_CANCELLED": errors.Aborted,
}
_KINDS = {
    ItemKind.SYSTEM_PROMPT: context_window_pb2.CONTEXT_ITEM_KIND_SYSTEM_PROMPT,
    ItemKind.SUMMARY: context_window_pb2.CONTEXT_ITEM_KIND_SUMMARY,
    ItemKind.MEMORY: context_window_pb2.CONTEXT_ITEM_KIND_MEMORY,
    ItemKind.PROFILE: context_window_pb2.CONTEXT_ITEM_KIND_PROFILE,
    ItemKind.MESSAGE: context_window_pb2.CONTEXT_ITEM_KIND_MESSAGE,
}
_DECISIONS = {
    Decision.INCLUDED: context_window_pb2.CONTEXT_DECISION_INCLUDED,
    Decision.PRUNED: context_window_pb2.CONTEXT_DECISION_PRUNED,
    Decision.SUMMARIZED: context_window_pb2.CONTEXT_DECISION_SUMMARIZED,
}


def conversation(value: Conversation) -> conversation_pb2.Conversation:
    return conversation_pb2.Conversation(
        name=value.name,
        title=value.title,
        system_prompt=value.system_prompt,
        creator=names.user_name(value.creator_id),
        message_count=value.message_count,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
        last_message_time=timestamp(value.last_message_time),
        prompt_token_count=value.prompt_tokens,
        completion_token_count=value.completion_tokens,
        tools=[names.tool_name(tool_id) for tool_id in value.tools],
    )


def message(value: Message) -> message_pb2.Message:
    return message_pb2.Message(
        name=value.name,
        role=_ROLES[value.role],
        content=value.content,
        metadata=dict(value.metadata),
        create_time=timestamp(value.create_time),
        token_count=value.token_count,
        author=names.user_name(value.author_id) if value.author_id else "",
        finish_reason=FINISH_REASONS[value.finish_reason],
        model=value.model,
        tool_calls=[tool_call(call) for call in value.tool_calls],
        tool_result=tool_result(value.tool_result) if value.tool_result else None,
    )


def struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a ``google.protobuf.Struct``."""
    message = struct_pb2.Struct()
    json_format.ParseDict(dict(value), message)
    return message


def tool_call(value: ToolCall) -> message_pb2.ToolCall:
    return message_pb2.ToolCall(
        id=value.id,
        tool=names.tool_name(value.tool),
        arguments=struct(value.arguments),
        state=_CALL_STATES[value.state],
    )


def tool_result(value: ToolResult) -> message_pb2.ToolResult:
    error: status_pb2.Status | None = None
    if value.error is not None:
        kind = _TOOL_ERRORS.get(value.error.reason, errors.ToolFailed)
        problem = kind(value.error.message, reason=value.error.reason)
        if isinstance(problem, errors.Unavailable):
            problem.retry_after = value.error.retry_after
        error = status.to_status_proto(problem)
    return message_pb2.ToolResult(
        tool_call_id=value.call_id,
        tool=names.tool_name(value.tool),
        output=struct(value.output or {}) if value.error is None else None,
        error=error,
    )


def approval_decision(value: int) -> ApprovalDecision | None:
    """The decision of a ``ToolApprovalDecision`` (None for UNSPECIFIED or unknown)."""
    if value == cpb.TOOL_APPROVAL_DECISION_APPROVE:
        return ApprovalDecision.APPROVE
    if value == cpb.TOOL_APPROVAL_DECISION_DENY:
        return ApprovalDecision.DENY
    return None


def summary(value: Summary) -> summary_pb2.Summary:
    prefix = names.message_name(value.workspace_id, value.conversation_id, "")
    return summary_pb2.Summary(
        name=value.name,
        text=value.text,
        first_message=prefix + value.first_message_id,
        last_message=prefix + value.last_message_id,
        message_count=value.message_count,
        token_count=value.token_count,
        model=value.model,
        create_time=timestamp(value.create_time),
    )


RUN_LIMIT = 50  # longer runs of left-out messages are reported as one item


def context_items(window: ContextWindow) -> list[context_window_pb2.ContextItem]:
    """The window's items; a long run of left-out messages with one decision is
    reported as one item (summed tokens, the run's range in ``reason``), so a
    window over 10,000 messages stays a few kilobytes."""
    items: list[context_window_pb2.ContextItem] = []
    run: list[Item] = []

    def flush() -> None:
        if len(run) > RUN_LIMIT:
            first, last = run[0], run[-1]
            items.append(
                context_window_pb2.ContextItem(
                    kind=_KINDS[ItemKind.MESSAGE],
                    source=last.candidate.source,
                    token_count=sum(i.candidate.token_count for i in run),
                    decision=_DECISIONS[first.decision],
                    reason=f"{len(run)} messages, {first.candidate.source.rsplit('/', 1)[1]}"
                    f" to {last.candidate.source.rsplit('/', 1)[1]}: {first.reason}",
                )
            )
        else:
            items.extend(_item(i) for i in run)
        run.clear()

    for item in window.items:
        groupable = (
            item.candidate.kind is ItemKind.MESSAGE and item.decision is not Decision.INCLUDED
        )
        if run and (not groupable or item.decision is not run[0].decision):
            flush()
        if groupable:
            run.append(item)
        else:
            items.append(_item(item))
    flush()
    return items


def _item(item: Item) -> context_window_pb2.ContextItem:
    included = item.decision is Decision.INCLUDED
    return context_window_pb2.ContextItem(
        kind=_KINDS[item.candidate.kind],
        source=item.candidate.source,
        text=item.candidate.text if included else "",
        token_count=item.candidate.token_count,
        decision=_DECISIONS[item.decision],
        reason=item.reason,
    )
