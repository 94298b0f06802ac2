"""Conversation, message, summary and context-window protos."""

from __future__ import annotations

from cortex.context.v1 import context_window_pb2, conversation_pb2, message_pb2, summary_pb2

from cortex_core.api.convert import timestamp
from cortex_core.domain.context_window import ContextWindow, Decision, ItemKind
from cortex_core.domain.conversations import (
    Conversation,
    FinishReason,
    Message,
    MessageRole,
    Summary,
)

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
        creator=f"users/{value.creator_id}",
        message_count=value.message_count,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
        last_message_time=timestamp(value.last_message_time),
    )


def message(value: Message) -> message_pb2.Message:
    return message_pb2.Message(
        name=value.name,
        role=_ROLES[value.role],
        content=value.content,
        metadata=dict(value.metadata),
        create_time=timestamp(value.create_time),
        token_count=value.token_count,
        author=f"users/{value.author_id}" if value.author_id else "",
        finish_reason=FINISH_REASONS[value.finish_reason],
        model=value.model,
    )


def summary(value: Summary) -> summary_pb2.Summary:
    prefix = f"workspaces/{value.workspace_id}/conversations/{value.conversation_id}/messages/"
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


def context_items(window: ContextWindow) -> list[context_window_pb2.ContextItem]:
    return [
        context_window_pb2.ContextItem(
            kind=_KINDS[item.candidate.kind],
            source=item.candidate.source,
            text=item.candidate.text,
            token_count=item.candidate.token_count,
            decision=_DECISIONS[item.decision],
            reason=item.reason,
        )
        for item in window.items
    ]
