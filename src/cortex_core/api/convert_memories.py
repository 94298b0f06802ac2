"""Memories as ``cortex.context.v1`` protos, and their kinds both ways."""

from __future__ import annotations

from cortex.context.v1 import memory_pb2

from cortex_core.api.convert import timestamp
from cortex_core.domain import names
from cortex_core.domain.memories import Memory, MemoryKind

KINDS = {
    MemoryKind.FACT: memory_pb2.MEMORY_KIND_FACT,
    MemoryKind.PREFERENCE: memory_pb2.MEMORY_KIND_PREFERENCE,
    MemoryKind.ENTITY: memory_pb2.MEMORY_KIND_ENTITY,
    MemoryKind.NOTE: memory_pb2.MEMORY_KIND_NOTE,
}
_FROM_PROTO: dict[int, MemoryKind] = {int(number): kind for kind, number in KINDS.items()}


def kind_from_proto(value: int) -> MemoryKind | None:
    """The kind, or None for MEMORY_KIND_UNSPECIFIED and unknown numbers."""
    return _FROM_PROTO.get(value)


def memory(value: Memory) -> memory_pb2.Memory:
    return memory_pb2.Memory(
        name=value.name,
        content=value.content,
        kind=KINDS[value.kind],
        expire_time=timestamp(value.expire_time),
        source_messages=list(value.source_messages),
        create_time=timestamp(value.create_time),
        stale=value.stale,
        creator=names.user_name(value.creator_id),
    )
