import datetime

from cortex.context.v1 import conversation_pb2 as _conversation_pb2
from cortex.context.v1 import memory_pb2 as _memory_pb2
from cortex.context.v1 import message_pb2 as _message_pb2
from cortex.experts.v1 import task_pb2 as _task_pb2
from cortex.sessions.v1 import workspace_pb2 as _workspace_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_WORKSPACE_CREATED: _ClassVar[EventType]
    EVENT_TYPE_WORKSPACE_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_WORKSPACE_DELETED: _ClassVar[EventType]
    EVENT_TYPE_MEMBER_ADDED: _ClassVar[EventType]
    EVENT_TYPE_MEMBER_REMOVED: _ClassVar[EventType]
    EVENT_TYPE_CONVERSATION_CREATED: _ClassVar[EventType]
    EVENT_TYPE_CONVERSATION_UPDATED: _ClassVar[EventType]
    EVENT_TYPE_CONVERSATION_DELETED: _ClassVar[EventType]
    EVENT_TYPE_MESSAGE_CREATED: _ClassVar[EventType]
    EVENT_TYPE_SESSION_CREATED: _ClassVar[EventType]
    EVENT_TYPE_SESSION_REVOKED: _ClassVar[EventType]
    EVENT_TYPE_PASSWORD_CHANGED: _ClassVar[EventType]
    EVENT_TYPE_REPLY_STARTED: _ClassVar[EventType]
    EVENT_TYPE_REPLY_DELTA: _ClassVar[EventType]
    EVENT_TYPE_REPLY_COMPLETED: _ClassVar[EventType]
    EVENT_TYPE_MEMORY_CREATED: _ClassVar[EventType]
    EVENT_TYPE_MEMORY_DELETED: _ClassVar[EventType]
    EVENT_TYPE_TASK_STATE_CHANGED: _ClassVar[EventType]
    EVENT_TYPE_TOOL_CALL_REQUESTED: _ClassVar[EventType]
    EVENT_TYPE_TOOL_CALL_COMPLETED: _ClassVar[EventType]

class SessionRevokeReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SESSION_REVOKE_REASON_UNSPECIFIED: _ClassVar[SessionRevokeReason]
    SESSION_REVOKE_REASON_LOGOUT: _ClassVar[SessionRevokeReason]
    SESSION_REVOKE_REASON_REVOKED: _ClassVar[SessionRevokeReason]
    SESSION_REVOKE_REASON_REFRESH_TOKEN_REUSED: _ClassVar[SessionRevokeReason]
    SESSION_REVOKE_REASON_PASSWORD_CHANGED: _ClassVar[SessionRevokeReason]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_WORKSPACE_CREATED: EventType
EVENT_TYPE_WORKSPACE_UPDATED: EventType
EVENT_TYPE_WORKSPACE_DELETED: EventType
EVENT_TYPE_MEMBER_ADDED: EventType
EVENT_TYPE_MEMBER_REMOVED: EventType
EVENT_TYPE_CONVERSATION_CREATED: EventType
EVENT_TYPE_CONVERSATION_UPDATED: EventType
EVENT_TYPE_CONVERSATION_DELETED: EventType
EVENT_TYPE_MESSAGE_CREATED: EventType
EVENT_TYPE_SESSION_CREATED: EventType
EVENT_TYPE_SESSION_REVOKED: EventType
EVENT_TYPE_PASSWORD_CHANGED: EventType
EVENT_TYPE_REPLY_STARTED: EventType
EVENT_TYPE_REPLY_DELTA: EventType
EVENT_TYPE_REPLY_COMPLETED: EventType
EVENT_TYPE_MEMORY_CREATED: EventType
EVENT_TYPE_MEMORY_DELETED: EventType
EVENT_TYPE_TASK_STATE_CHANGED: EventType
EVENT_TYPE_TOOL_CALL_REQUESTED: EventType
EVENT_TYPE_TOOL_CALL_COMPLETED: EventType
SESSION_REVOKE_REASON_UNSPECIFIED: SessionRevokeReason
SESSION_REVOKE_REASON_LOGOUT: SessionRevokeReason
SESSION_REVOKE_REASON_REVOKED: SessionRevokeReason
SESSION_REVOKE_REASON_REFRESH_TOKEN_REUSED: SessionRevokeReason
SESSION_REVOKE_REASON_PASSWORD_CHANGED: SessionRevokeReason

class Event(_message.Message):
    __slots__ = ("id", "workspace", "sequence", "resume_token", "create_time", "actor", "type", "workspace_created", "workspace_updated", "workspace_deleted", "member_added", "member_removed", "conversation_created", "conversation_updated", "conversation_deleted", "message_created", "session_created", "session_revoked", "password_changed", "reply_started", "reply_delta", "reply_completed", "memory_created", "memory_deleted", "task_state_changed", "tool_call_requested", "tool_call_completed")
    ID_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_CREATED_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_UPDATED_FIELD_NUMBER: _ClassVar[int]
    WORKSPACE_DELETED_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ADDED_FIELD_NUMBER: _ClassVar[int]
    MEMBER_REMOVED_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_CREATED_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_UPDATED_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_DELETED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_CREATED_FIELD_NUMBER: _ClassVar[int]
    SESSION_CREATED_FIELD_NUMBER: _ClassVar[int]
    SESSION_REVOKED_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_CHANGED_FIELD_NUMBER: _ClassVar[int]
    REPLY_STARTED_FIELD_NUMBER: _ClassVar[int]
    REPLY_DELTA_FIELD_NUMBER: _ClassVar[int]
    REPLY_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_CREATED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_DELETED_FIELD_NUMBER: _ClassVar[int]
    TASK_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    id: str
    workspace: str
    sequence: int
    resume_token: str
    create_time: _timestamp_pb2.Timestamp
    actor: str
    type: EventType
    workspace_created: WorkspaceCreated
    workspace_updated: WorkspaceUpdated
    workspace_deleted: WorkspaceDeleted
    member_added: MemberAdded
    member_removed: MemberRemoved
    conversation_created: ConversationCreated
    conversation_updated: ConversationUpdated
    conversation_deleted: ConversationDeleted
    message_created: MessageCreated
    session_created: SessionCreated
    session_revoked: SessionRevoked
    password_changed: PasswordChanged
    reply_started: ReplyStarted
    reply_delta: ReplyDelta
    reply_completed: ReplyCompleted
    memory_created: MemoryCreated
    memory_deleted: MemoryDeleted
    task_state_changed: TaskStateChanged
    tool_call_requested: ToolCallRequested
    tool_call_completed: ToolCallCompleted
    def __init__(self, id: _Optional[str] = ..., workspace: _Optional[str] = ..., sequence: _Optional[int] = ..., resume_token: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., workspace_created: _Optional[_Union[WorkspaceCreated, _Mapping]] = ..., workspace_updated: _Optional[_Union[WorkspaceUpdated, _Mapping]] = ..., workspace_deleted: _Optional[_Union[WorkspaceDeleted, _Mapping]] = ..., member_added: _Optional[_Union[MemberAdded, _Mapping]] = ..., member_removed: _Optional[_Union[MemberRemoved, _Mapping]] = ..., conversation_created: _Optional[_Union[ConversationCreated, _Mapping]] = ..., conversation_updated: _Optional[_Union[ConversationUpdated, _Mapping]] = ..., conversation_deleted: _Optional[_Union[ConversationDeleted, _Mapping]] = ..., message_created: _Optional[_Union[MessageCreated, _Mapping]] = ..., session_created: _Optional[_Union[SessionCreated, _Mapping]] = ..., session_revoked: _Optional[_Union[SessionRevoked, _Mapping]] = ..., password_changed: _Optional[_Union[PasswordChanged, _Mapping]] = ..., reply_started: _Optional[_Union[ReplyStarted, _Mapping]] = ..., reply_delta: _Optional[_Union[ReplyDelta, _Mapping]] = ..., reply_completed: _Optional[_Union[ReplyCompleted, _Mapping]] = ..., memory_created: _Optional[_Union[MemoryCreated, _Mapping]] = ..., memory_deleted: _Optional[_Union[MemoryDeleted, _Mapping]] = ..., task_state_changed: _Optional[_Union[TaskStateChanged, _Mapping]] = ..., tool_call_requested: _Optional[_Union[ToolCallRequested, _Mapping]] = ..., tool_call_completed: _Optional[_Union[ToolCallCompleted, _Mapping]] = ...) -> None: ...

class WorkspaceCreated(_message.Message):
    __slots__ = ("workspace",)
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    workspace: _workspace_pb2.Workspace
    def __init__(self, workspace: _Optional[_Union[_workspace_pb2.Workspace, _Mapping]] = ...) -> None: ...

class WorkspaceUpdated(_message.Message):
    __slots__ = ("workspace", "update_mask")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    workspace: _workspace_pb2.Workspace
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, workspace: _Optional[_Union[_workspace_pb2.Workspace, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class WorkspaceDeleted(_message.Message):
    __slots__ = ("workspace",)
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    def __init__(self, workspace: _Optional[str] = ...) -> None: ...

class MemberAdded(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: _workspace_pb2.WorkspaceMember
    def __init__(self, member: _Optional[_Union[_workspace_pb2.WorkspaceMember, _Mapping]] = ...) -> None: ...

class MemberRemoved(_message.Message):
    __slots__ = ("member",)
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    member: _workspace_pb2.WorkspaceMember
    def __init__(self, member: _Optional[_Union[_workspace_pb2.WorkspaceMember, _Mapping]] = ...) -> None: ...

class ConversationCreated(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: _conversation_pb2.Conversation
    def __init__(self, conversation: _Optional[_Union[_conversation_pb2.Conversation, _Mapping]] = ...) -> None: ...

class ConversationUpdated(_message.Message):
    __slots__ = ("conversation", "update_mask")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    conversation: _conversation_pb2.Conversation
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, conversation: _Optional[_Union[_conversation_pb2.Conversation, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class ConversationDeleted(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: str
    def __init__(self, conversation: _Optional[str] = ...) -> None: ...

class MessageCreated(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _message_pb2.Message
    def __init__(self, message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ...) -> None: ...

class SessionCreated(_message.Message):
    __slots__ = ("session", "client_address", "user_agent")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    session: str
    client_address: str
    user_agent: str
    def __init__(self, session: _Optional[str] = ..., client_address: _Optional[str] = ..., user_agent: _Optional[str] = ...) -> None: ...

class SessionRevoked(_message.Message):
    __slots__ = ("session", "reason")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session: str
    reason: SessionRevokeReason
    def __init__(self, session: _Optional[str] = ..., reason: _Optional[_Union[SessionRevokeReason, str]] = ...) -> None: ...

class PasswordChanged(_message.Message):
    __slots__ = ("session", "revoked_session_count")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    REVOKED_SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    session: str
    revoked_session_count: int
    def __init__(self, session: _Optional[str] = ..., revoked_session_count: _Optional[int] = ...) -> None: ...

class ReplyStarted(_message.Message):
    __slots__ = ("conversation", "message", "user_message")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    USER_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    conversation: str
    message: str
    user_message: str
    def __init__(self, conversation: _Optional[str] = ..., message: _Optional[str] = ..., user_message: _Optional[str] = ...) -> None: ...

class ReplyDelta(_message.Message):
    __slots__ = ("message", "text")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    message: str
    text: str
    def __init__(self, message: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ReplyCompleted(_message.Message):
    __slots__ = ("message", "finish_reason", "error")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    message: _message_pb2.Message
    finish_reason: _message_pb2.FinishReason
    error: _status_pb2.Status
    def __init__(self, message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ..., finish_reason: _Optional[_Union[_message_pb2.FinishReason, str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ToolCallRequested(_message.Message):
    __slots__ = ("conversation", "message", "tool_call")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    conversation: str
    message: str
    tool_call: _message_pb2.ToolCall
    def __init__(self, conversation: _Optional[str] = ..., message: _Optional[str] = ..., tool_call: _Optional[_Union[_message_pb2.ToolCall, _Mapping]] = ...) -> None: ...

class ToolCallCompleted(_message.Message):
    __slots__ = ("conversation", "message", "result")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    conversation: str
    message: str
    result: _message_pb2.ToolResult
    def __init__(self, conversation: _Optional[str] = ..., message: _Optional[str] = ..., result: _Optional[_Union[_message_pb2.ToolResult, _Mapping]] = ...) -> None: ...

class MemoryCreated(_message.Message):
    __slots__ = ("memory",)
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    memory: _memory_pb2.Memory
    def __init__(self, memory: _Optional[_Union[_memory_pb2.Memory, _Mapping]] = ...) -> None: ...

class MemoryDeleted(_message.Message):
    __slots__ = ("memory", "expired")
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    memory: str
    expired: bool
    def __init__(self, memory: _Optional[str] = ..., expired: _Optional[bool] = ...) -> None: ...

class TaskStateChanged(_message.Message):
    __slots__ = ("task", "previous_state")
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    previous_state: _task_pb2.TaskState
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ..., previous_state: _Optional[_Union[_task_pb2.TaskState, str]] = ...) -> None: ...
