"""What a reply stores about tool calls: pending calls, the decisions on them,
and the tool messages that hold results.

A reply that needs approval ends with its assistant message holding the calls
in PENDING_APPROVAL; nothing else remembers them (no memory, no task), so a
restart or a disconnect loses nothing. The next send decides them, in the same
transaction that takes the conversation's reply lease: a continuation
(``approvals``) marks each call CALLED (approved) or DENIED (denied or not
mentioned), a plain message marks every one DENIED; each denied call gets a
TOOL_DENIED result message at once. Because the states change under the lease,
two sends can never both run an approved call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from cortex_core import errors
from cortex_core.domain.conversations import MAX_CONTENT, Conversation, Message, MessageRole
from cortex_core.domain.identity import new_id, text_violation
from cortex_core.domain.tools import (
    ApprovalDecision,
    ToolApproval,
    ToolCall,
    ToolCallState,
    ToolResult,
    failed_result,
    result_text,
)
from cortex_core.ports import TokenCounter, UnitOfWork

PENDING_SCAN = 512  # newest messages searched for the last assistant message
DENIED_BY_MESSAGE = "denied: the user sent a new message instead of deciding"
DENIED_BY_PERSON = "denied by the user"


def request_violations(
    content: str, approvals: Sequence[ToolApproval]
) -> list[errors.FieldViolation | None]:
    """What is wrong with a send's ``content`` and ``approvals`` on their own."""
    if not approvals:
        return [text_violation(content, "content", required=True, limit=MAX_CONTENT)]
    found: list[errors.FieldViolation | None] = []
    if content:
        found.append(
            errors.FieldViolation("content", "must be empty when approvals are given", "CONFLICT")
        )
    seen: set[str] = set()
    for index, approval in enumerate(approvals):
        field = f"approvals[{index}]"
        if not approval.call_id:
            found.append(errors.FieldViolation(f"{field}.tool_call_id", "is required", "REQUIRED"))
        elif approval.call_id in seen:
            found.append(errors.FieldViolation(f"{field}.tool_call_id", "is repeated", "DUPLICATE"))
        seen.add(approval.call_id)
        if approval.decision is None:
            found.append(
                errors.FieldViolation(f"{field}.decision", "must be APPROVE or DENY", "REQUIRED")
            )
    return found


def newest_pending(messages: Sequence[Message]) -> Message | None:
    """The newest assistant message of ``messages`` (oldest first) if it holds
    pending calls."""
    for message in reversed(messages):
        if message.role is MessageRole.ASSISTANT:
            return message if message.pending_calls else None
    return None


async def pending_message(uow: UnitOfWork, conversation_id: str) -> Message | None:
    """The conversation's message with pending calls, read now (under the lease)."""
    recent = await uow.conversations.list_messages(
        conversation_id, limit=PENDING_SCAN, newest_first=True
    )
    return newest_pending(list(reversed(recent)))


def decisions_for(
    pending: Message, approvals: Sequence[ToolApproval]
) -> dict[str, ApprovalDecision]:
    """Every pending call's decision (DENY when not given); InvalidArgument naming
    each approval whose id is not a pending call."""
    waiting = {call.id for call in pending.pending_calls}
    unknown = [
        errors.FieldViolation(
            f"approvals[{index}].tool_call_id", "is not a pending tool call", "UNKNOWN_TOOL_CALL"
        )
        for index, approval in enumerate(approvals)
        if approval.call_id not in waiting
    ]
    if unknown:
        raise errors.InvalidArgument("approvals name calls that are not pending", unknown)
    given = {a.call_id: a.decision for a in approvals if a.decision is not None}
    return {call_id: given.get(call_id, ApprovalDecision.DENY) for call_id in waiting}


async def decide(
    uow: UnitOfWork,
    pending: Message,
    decisions: dict[str, ApprovalDecision],
    *,
    now: datetime,
    counter: TokenCounter,
    denied_because: str,
) -> tuple[list[Message], tuple[ToolCall, ...]]:
    """Apply ``decisions`` to ``pending``'s calls in ``uow``: store the new states
    and a TOOL_DENIED result per denied call. Return the stored tool messages
    and the approved calls (to run next)."""
    calls = tuple(
        dataclasses.replace(
            call,
            state=ToolCallState.CALLED
            if decisions.get(call.id) is ApprovalDecision.APPROVE
            else ToolCallState.DENIED,
        )
        if call.state is ToolCallState.PENDING_APPROVAL
        else call
        for call in pending.tool_calls
    )
    await uow.conversations.set_tool_calls(pending.conversation_id, pending.id, calls)
    stored = []
    for call in calls:
        if call.state is ToolCallState.DENIED:
            result = failed_result(call, "TOOL_DENIED", denied_because)
            message = result_message(pending, result, now=now, counter=counter)
            stored.append(await uow.conversations.append_message(message))
    approved = tuple(
        c for c in calls if c.state is ToolCallState.CALLED and decisions.get(c.id) is not None
    )
    return stored, approved


def result_message(
    about: Conversation | Message, result: ToolResult, *, now: datetime, counter: TokenCounter
) -> Message:
    """The MESSAGE_ROLE_TOOL message holding ``result`` (``content`` is what the
    model is told)."""
    content = result_text(result)
    if isinstance(about, Conversation):
        workspace_id, conversation_id = about.workspace_id, about.id
    else:
        workspace_id, conversation_id = about.workspace_id, about.conversation_id
    return Message(
        id=new_id(),
        conversation_id=conversation_id,
        workspace_id=workspace_id,
        position=0,
        role=MessageRole.TOOL,
        content=content,
        token_count=counter.count(content),
        create_time=now,
        tool_result=result,
    )
