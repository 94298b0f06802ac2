from cortex.context.v1 import context_window_pb2 as _context_window_pb2
from cortex.context.v1 import summary_pb2 as _summary_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetContextWindowRequest(_message.Message):
    __slots__ = ("conversation", "token_budget")
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    conversation: str
    token_budget: int
    def __init__(self, conversation: _Optional[str] = ..., token_budget: _Optional[int] = ...) -> None: ...

class GetContextWindowResponse(_message.Message):
    __slots__ = ("items", "total_token_count", "token_budget")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_context_window_pb2.ContextItem]
    total_token_count: int
    token_budget: int
    def __init__(self, items: _Optional[_Iterable[_Union[_context_window_pb2.ContextItem, _Mapping]]] = ..., total_token_count: _Optional[int] = ..., token_budget: _Optional[int] = ...) -> None: ...

class SummarizeConversationRequest(_message.Message):
    __slots__ = ("conversation",)
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    conversation: str
    def __init__(self, conversation: _Optional[str] = ...) -> None: ...

class SummarizeConversationResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: _summary_pb2.Summary
    def __init__(self, summary: _Optional[_Union[_summary_pb2.Summary, _Mapping]] = ...) -> None: ...
