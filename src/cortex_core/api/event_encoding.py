"""Domain changes as ``cortex.events.v1.Event`` protos, and their publication.

The log stores each event as a serialized ``Event`` without ``sequence`` and
``resume_token``: those depend on where and to whom it is delivered and are
filled in by ``EventService`` on the way out.
"""

from __future__ import annotations

from typing import Any

from cortex.events.v1 import event_pb2 as pb
from google.protobuf import field_mask_pb2

from cortex_core.api import convert, convert_memories
from cortex_core.api import convert_conversations as cc
from cortex_core.domain import changes as c
from cortex_core.domain.identity import new_id

_REASONS = {
    c.RevokeReason.LOGOUT: pb.SESSION_REVOKE_REASON_LOGOUT,
    c.RevokeReason.REVOKED: pb.SESSION_REVOKE_REASON_REVOKED,
    c.RevokeReason.REFRESH_TOKEN_REUSED: pb.SESSION_REVOKE_REASON_REFRESH_TOKEN_REUSED,
    c.RevokeReason.PASSWORD_CHANGED: pb.SESSION_REVOKE_REASON_PASSWORD_CHANGED,
}


def _session_name(user_id: str, session_id: str) -> str:
    return f"users/{user_id}/sessions/{session_id}"


def _payload(change: c.Change) -> tuple[str, Any, Any]:
    """(oneof field, EventType, payload message) of a change."""
    if isinstance(change, c.WorkspaceCreated):
        return (
            "workspace_created",
            pb.EVENT_TYPE_WORKSPACE_CREATED,
            pb.WorkspaceCreated(workspace=convert.workspace(change.workspace)),
        )
    if isinstance(change, c.WorkspaceUpdated):
        return (
            "workspace_updated",
            pb.EVENT_TYPE_WORKSPACE_UPDATED,
            pb.WorkspaceUpdated(
                workspace=convert.workspace(change.workspace),
                update_mask=field_mask_pb2.FieldMask(paths=list(change.fields)),
            ),
        )
    if isinstance(change, c.WorkspaceDeleted):
        return (
            "workspace_deleted",
            pb.EVENT_TYPE_WORKSPACE_DELETED,
            pb.WorkspaceDeleted(workspace=f"workspaces/{change.deleted_workspace_id}"),
        )
    if isinstance(change, c.MemberAdded):
        return (
            "member_added",
            pb.EVENT_TYPE_MEMBER_ADDED,
            pb.MemberAdded(member=convert.member(change.member)),
        )
    if isinstance(change, c.MemberRemoved):
        return (
            "member_removed",
            pb.EVENT_TYPE_MEMBER_REMOVED,
            pb.MemberRemoved(member=convert.member(change.member)),
        )
    if isinstance(change, c.ConversationCreated | c.ConversationUpdated | c.ConversationDeleted):
        return _conversation_payload(change)
    if isinstance(change, c.MessageCreated):
        return (
            "message_created",
            pb.EVENT_TYPE_MESSAGE_CREATED,
            pb.MessageCreated(message=cc.message(change.message)),
        )
    if isinstance(change, c.ReplyStarted):
        return (
            "reply_started",
            pb.EVENT_TYPE_REPLY_STARTED,
            pb.ReplyStarted(
                conversation=change.conversation.name,
                message=f"{change.conversation.name}/messages/{change.reply_id}",
                user_message=change.user_message.name,
            ),
        )
    if isinstance(change, c.ReplyDelta):
        return (
            "reply_delta",
            pb.EVENT_TYPE_REPLY_DELTA,
            pb.ReplyDelta(
                message=f"{change.conversation.name}/messages/{change.reply_id}", text=change.text
            ),
        )
    if isinstance(change, c.ReplyCompleted):
        return (
            "reply_completed",
            pb.EVENT_TYPE_REPLY_COMPLETED,
            pb.ReplyCompleted(
                message=cc.message(change.message),
                finish_reason=cc.FINISH_REASONS[change.message.finish_reason],
            ),
        )
    if isinstance(change, c.SessionCreated):
        return (
            "session_created",
            pb.EVENT_TYPE_SESSION_CREATED,
            pb.SessionCreated(
                session=change.session.name,
                client_address=change.session.client_address,
                user_agent=change.session.user_agent,
            ),
        )
    if isinstance(change, c.SessionRevoked):
        return (
            "session_revoked",
            pb.EVENT_TYPE_SESSION_REVOKED,
            pb.SessionRevoked(
                session=_session_name(change.user_id, change.session_id),
                reason=_REASONS[change.reason],
            ),
        )
    if isinstance(change, c.PasswordChanged):
        return (
            "password_changed",
            pb.EVENT_TYPE_PASSWORD_CHANGED,
            pb.PasswordChanged(
                session=_session_name(change.user_id, change.session_id),
                revoked_session_count=change.revoked_session_count,
            ),
        )
    if isinstance(change, c.MemoryCreated):
        return (
            "memory_created",
            pb.EVENT_TYPE_MEMORY_CREATED,
            pb.MemoryCreated(memory=convert_memories.memory(change.memory)),
        )
    if isinstance(change, c.MemoryDeleted):
        return (
            "memory_deleted",
            pb.EVENT_TYPE_MEMORY_DELETED,
            pb.MemoryDeleted(memory=change.memory.name, expired=change.expired),
        )
    raise TypeError(f"no event encoding for {type(change).__name__}")


def _conversation_payload(
    change: c.ConversationCreated | c.ConversationUpdated | c.ConversationDeleted,
) -> tuple[str, Any, Any]:
    if isinstance(change, c.ConversationCreated):
        return (
            "conversation_created",
            pb.EVENT_TYPE_CONVERSATION_CREATED,
            pb.ConversationCreated(conversation=cc.conversation(change.conversation)),
        )
    if isinstance(change, c.ConversationUpdated):
        return (
            "conversation_updated",
            pb.EVENT_TYPE_CONVERSATION_UPDATED,
            pb.ConversationUpdated(
                conversation=cc.conversation(change.conversation),
                update_mask=field_mask_pb2.FieldMask(paths=list(change.fields)),
            ),
        )
    return (
        "conversation_deleted",
        pb.EVENT_TYPE_CONVERSATION_DELETED,
        pb.ConversationDeleted(conversation=change.conversation.name),
    )


def encode(change: c.Change, event_id: str) -> bytes:
    field, event_type, payload = _payload(change)
    event = pb.Event(
        id=event_id,
        workspace=f"workspaces/{change.workspace_id}" if change.workspace_id else "",
        create_time=convert.timestamp(change.time),
        actor=f"users/{change.actor_id}" if change.actor_id else "",
        type=event_type,
    )
    getattr(event, field).CopyFrom(payload)
    return bytes(event.SerializeToString())


def encode_change(change: c.Change) -> tuple[str, str, bytes]:
    """(stream, event id, serialized Event) for the event log."""
    event_id = new_id()
    return change.stream, event_id, encode(change, event_id)
