"""``cortex.context.v1.MemoryService``: a workspace's long-term memories."""

from __future__ import annotations

from datetime import timedelta

from cortex.context.v1 import memory_service_pb2 as pb
from cortex.context.v1 import memory_service_pb2_grpc as pb_grpc

from cortex_core import errors
from cortex_core.api import convert
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.api.convert_memories import kind_from_proto, memory
from cortex_core.domain import names
from cortex_core.domain.paging import PageRequest
from cortex_core.services.memories import Memories


def _workspace_id(name: str) -> str:
    (workspace_id,) = convert.parse_name(name, names.WORKSPACE, "parent")
    return workspace_id


def _memory_ids(name: str) -> tuple[str, str]:
    workspace_id, memory_id = convert.parse_name(name, names.MEMORY, "name")
    return workspace_id, memory_id


def _ttl(request: pb.CreateMemoryRequest) -> timedelta | None:
    if not request.memory.HasField("ttl"):
        return None
    ttl = request.memory.ttl
    if ttl.seconds < 0 or ttl.nanos < 0:
        # Reported by the service as a non-positive ttl.
        return timedelta(0)
    return timedelta(seconds=ttl.seconds, microseconds=ttl.nanos // 1000)


class MemoryService(pb_grpc.MemoryServiceServicer):
    def __init__(self, memories: Memories) -> None:
        self._memories = memories

    async def CreateMemory(
        self, request: pb.CreateMemoryRequest, context: ServicerContext
    ) -> pb.CreateMemoryResponse:
        workspace_id = _workspace_id(request.parent)
        try:
            created = await self._memories.create(
                current_caller(),
                workspace_id,
                content=request.memory.content,
                kind=kind_from_proto(request.memory.kind),
                ttl=_ttl(request),
                source_messages=list(request.memory.source_messages),
            )
        except errors.InvalidArgument as exc:
            raise convert.prefix_violations(exc, "memory.") from None
        return pb.CreateMemoryResponse(memory=memory(created))

    async def GetMemory(
        self, request: pb.GetMemoryRequest, context: ServicerContext
    ) -> pb.GetMemoryResponse:
        found = await self._memories.get(current_caller(), *_memory_ids(request.name))
        return pb.GetMemoryResponse(memory=memory(found))

    async def ListMemories(
        self, request: pb.ListMemoriesRequest, context: ServicerContext
    ) -> pb.ListMemoriesResponse:
        page = await self._memories.list(
            current_caller(),
            _workspace_id(request.parent),
            kind_from_proto(request.kind),
            PageRequest.parse(request.page_size, request.page_token),
        )
        return pb.ListMemoriesResponse(
            memories=[memory(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def DeleteMemory(
        self, request: pb.DeleteMemoryRequest, context: ServicerContext
    ) -> pb.DeleteMemoryResponse:
        await self._memories.delete(current_caller(), *_memory_ids(request.name))
        return pb.DeleteMemoryResponse()

    async def SearchMemories(
        self, request: pb.SearchMemoriesRequest, context: ServicerContext
    ) -> pb.SearchMemoriesResponse:
        page = await self._memories.search(
            current_caller(),
            _workspace_id(request.parent),
            request.query,
            kind_from_proto(request.kind),
            request.page_size,
            request.page_token,
        )
        return pb.SearchMemoriesResponse(
            results=[
                pb.MemorySearchResult(memory=memory(hit.memory), score=hit.score)
                for hit in page.items
            ],
            next_page_token=page.next_page_token,
        )
