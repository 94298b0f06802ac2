import datetime

from cortex.events.v1 import event_pb2 as _event_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeEventsRequest(_message.Message):
    __slots__ = ("workspaces", "conversation", "event_types", "resume_token")
    WORKSPACES_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workspaces: _containers.RepeatedScalarFieldContainer[str]
    conversation: str
    event_types: _containers.RepeatedScalarFieldContainer[_event_pb2.EventType]
    resume_token: str
    def __init__(self, workspaces: _Optional[_Iterable[str]] = ..., conversation: _Optional[str] = ..., event_types: _Optional[_Iterable[_Union[_event_pb2.EventType, str]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class SubscribeEventsResponse(_message.Message):
    __slots__ = ("event", "heartbeat", "replay_unavailable")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REPLAY_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    event: _event_pb2.Event
    heartbeat: Heartbeat
    replay_unavailable: ReplayUnavailable
    def __init__(self, event: _Optional[_Union[_event_pb2.Event, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., replay_unavailable: _Optional[_Union[ReplayUnavailable, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("server_time", "resume_token")
    SERVER_TIME_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    server_time: _timestamp_pb2.Timestamp
    resume_token: str
    def __init__(self, server_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ReplayUnavailable(_message.Message):
    __slots__ = ("workspace", "requested_sequence", "oldest_available_sequence")
    WORKSPACE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_AVAILABLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    workspace: str
    requested_sequence: int
    oldest_available_sequence: int
    def __init__(self, workspace: _Optional[str] = ..., requested_sequence: _Optional[int] = ..., oldest_available_sequence: _Optional[int] = ...) -> None: ...
