"""Domain changes as serialized ``cortex.events.v1.Event`` protos: the payload of a record.

The relay calls :func:`encode` once per event when it publishes (see
docs/events.md for why the wire form is fixed then). The log stores the
serialized ``Event`` without ``sequence`` and ``resume_token``: those depend on
where and to whom it is delivered and are filled in by ``EventService`` on the
way out. :data:`EVENT_TYPES` maps the domain's :class:`EventKind` to the
contract's ``EventType`` (same names), for both directions.
"""

from __future__ import annotations

from typing import Any

from cortex.events.v1 import event_pb2 as pb
from google.protobuf import field_mask_pb2

from cortex_core.api import convert, convert_memories
from cortex_core.api import convert_conversations as cc
from cortex_core.api import convert_tasks as ct
from cortex_core.domain import events as c
from cortex_core.domain.event_records import EventKind

EVENT_TYPES: dict[EventKind, pb.EventType] = {
    kind: getattr(pb, f"EVENT_TYPE_{kind.name}") for kind in EventKind
}
KINDS: dict[int, EventKind] = {value: kind for kind, value in EVENT_TYPES.items()}

_REASONS = {
    c.RevokeReason.LOGOUT: pb.SESSION_REVOKE_REASON_LOGOUT,
    c.RevokeReason.REVOKED: pb.SESSION_REVOKE_REASON_REVOKED,
    c.RevokeReason.REFRESH_TOKEN_REUSED: pb.SESSION_REVOKE_REASON_REFRESH_TOKEN_REUSED,
    c.RevokeReason.PASSWORD_CHANGED: pb.SESSION_REVOKE_REASON_PASSWORD_CHANGED,
}


def _session_name(user_id: str, session_id: str) -> str:
    return f"users/{user_id}/sessions/{session_id}"


def _payload(change: c.Change) -> Any:
    """The payload message of a change (set in the oneof field named by its kind)."""
    if isinstance(change, c.WorkspaceCreated):
        return pb.WorkspaceCreated(workspace=convert.workspace(change.workspace))
    if isinstance(change, c.WorkspaceUpdated):
        return pb.WorkspaceUpdated(
            workspace=convert.workspace(change.workspace),
            update_mask=field_mask_pb2.FieldMask(paths=list(change.fields)),
        )
    if isinstance(change, c.WorkspaceDeleted):
        return pb.WorkspaceDeleted(workspace=f"workspaces/{change.deleted_workspace_id}")
    if isinstance(change, c.MemberAdded):
        return pb.MemberAdded(member=convert.member(change.member))
    if isinstance(change, c.MemberRemoved):
        return pb.MemberRemoved(member=convert.member(change.member))
    if isinstance(change, c.ConversationCreated | c.ConversationUpdated | c.ConversationDeleted):
        return _conversation_payload(change)
    if isinstance(change, c.MessageCreated):
        return pb.MessageCreated(message=cc.message(change.message))
    if isinstance(change, c.ReplyStarted):
        return pb.ReplyStarted(
            conversation=change.conversation.name,
            message=f"{change.conversation.name}/messages/{change.reply_id}",
            user_message=change.user_message.name if change.user_message else "",
        )
    if isinstance(change, c.ReplyDelta):
        return pb.ReplyDelta(
            message=f"{change.conversation.name}/messages/{change.reply_id}", text=change.text
        )
    if isinstance(change, c.ReplyCompleted):
        return pb.ReplyCompleted(
            message=cc.message(change.message),
            finish_reason=cc.FINISH_REASONS[change.message.finish_reason],
        )
    if isinstance(change, c.ToolCallRequested):
        return pb.ToolCallRequested(
            conversation=change.message.conversation_name,
            message=change.message.name,
            tool_call=cc.tool_call(change.tool_call),
        )
    if isinstance(change, c.ToolCallCompleted):
        return pb.ToolCallCompleted(
            conversation=change.message.conversation_name,
            message=change.message.name,
            result=cc.tool_result(change.result),
        )
    if isinstance(change, c.SessionCreated):
        return pb.SessionCreated(
            session=change.session.name,
            client_address=change.session.client_address,
            user_agent=change.session.user_agent,
        )
    if isinstance(change, c.SessionRevoked):
        return pb.SessionRevoked(
            session=_session_name(change.user_id, change.session_id),
            reason=_REASONS[change.reason],
        )
    if isinstance(change, c.PasswordChanged):
        return pb.PasswordChanged(
            session=_session_name(change.user_id, change.session_id),
            revoked_session_count=change.revoked_session_count,
        )
    if isinstance(change, c.MemoryCreated):
        return pb.MemoryCreated(memory=convert_memories.memory(change.memory))
    if isinstance(change, c.MemoryDeleted):
        return pb.MemoryDeleted(memory=change.memory.name, expired=change.expired)
    if isinstance(change, c.TaskStateChanged):
        previous = change.previous_state
        return pb.TaskStateChanged(
            task=ct.task(change.task),
            previous_state=(ct.STATES[previous] if previous is not None else ct.UNSPECIFIED),
        )
    raise TypeError(f"no event encoding for {type(change).__name__}")


def _conversation_payload(
    change: c.ConversationCreated | c.ConversationUpdated | c.ConversationDeleted,
) -> Any:
    if isinstance(change, c.ConversationCreated):
        return pb.ConversationCreated(conversation=cc.conversation(change.conversation))
    if isinstance(change, c.ConversationUpdated):
        return pb.ConversationUpdated(
            conversation=cc.conversation(change.conversation),
            update_mask=field_mask_pb2.FieldMask(paths=list(change.fields)),
        )
    return pb.ConversationDeleted(conversation=change.conversation.name)


def encode(change: c.Change, event_id: str) -> bytes:
    """The serialized ``Event`` of ``change`` (the relay's ``Encode``)."""
    event = pb.Event(
        id=event_id,
        workspace=f"workspaces/{change.workspace_id}" if change.workspace_id else "",
        create_time=convert.timestamp(change.time),
        actor=f"users/{change.actor_id}" if change.actor_id else "",
        type=EVENT_TYPES[change.KIND],
    )
    getattr(event, change.KIND.value).CopyFrom(_payload(change))
    return bytes(event.SerializeToString())
