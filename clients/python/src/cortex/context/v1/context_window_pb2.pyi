from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ContextItemKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_ITEM_KIND_UNSPECIFIED: _ClassVar[ContextItemKind]
    CONTEXT_ITEM_KIND_SYSTEM_PROMPT: _ClassVar[ContextItemKind]
    CONTEXT_ITEM_KIND_SUMMARY: _ClassVar[ContextItemKind]
    CONTEXT_ITEM_KIND_MEMORY: _ClassVar[ContextItemKind]
    CONTEXT_ITEM_KIND_PROFILE: _ClassVar[ContextItemKind]
    CONTEXT_ITEM_KIND_MESSAGE: _ClassVar[ContextItemKind]

class ContextDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTEXT_DECISION_UNSPECIFIED: _ClassVar[ContextDecision]
    CONTEXT_DECISION_INCLUDED: _ClassVar[ContextDecision]
    CONTEXT_DECISION_PRUNED: _ClassVar[ContextDecision]
    CONTEXT_DECISION_SUMMARIZED: _ClassVar[ContextDecision]
CONTEXT_ITEM_KIND_UNSPECIFIED: ContextItemKind
CONTEXT_ITEM_KIND_SYSTEM_PROMPT: ContextItemKind
CONTEXT_ITEM_KIND_SUMMARY: ContextItemKind
CONTEXT_ITEM_KIND_MEMORY: ContextItemKind
CONTEXT_ITEM_KIND_PROFILE: ContextItemKind
CONTEXT_ITEM_KIND_MESSAGE: ContextItemKind
CONTEXT_DECISION_UNSPECIFIED: ContextDecision
CONTEXT_DECISION_INCLUDED: ContextDecision
CONTEXT_DECISION_PRUNED: ContextDecision
CONTEXT_DECISION_SUMMARIZED: ContextDecision

class ContextItem(_message.Message):
    __slots__ = ("kind", "source", "text", "token_count", "decision", "reason")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kind: ContextItemKind
    source: str
    text: str
    token_count: int
    decision: ContextDecision
    reason: str
    def __init__(self, kind: _Optional[_Union[ContextItemKind, str]] = ..., source: _Optional[str] = ..., text: _Optional[str] = ..., token_count: _Optional[int] = ..., decision: _Optional[_Union[ContextDecision, str]] = ..., reason: _Optional[str] = ...) -> None: ...
