"""``cortex.context.v1.ContextService``: explain and manage the context window."""

from __future__ import annotations

from cortex.context.v1 import context_service_pb2 as pb
from cortex.context.v1 import context_service_pb2_grpc as pb_grpc

from cortex_core.api import convert_conversations as cc
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.api.conversation_service import conversation_id
from cortex_core.domain.context_window import ContextWindow
from cortex_core.services.context import ContextManager


class ContextService(pb_grpc.ContextServiceServicer):
    def __init__(self, manager: ContextManager) -> None:
        self._manager = manager

    async def GetContextWindow(
        self, request: pb.GetContextWindowRequest, context: ServicerContext
    ) -> pb.GetContextWindowResponse:
        rendered = await self._manager.window(
            current_caller(),
            *conversation_id(request.conversation, "conversation"),
            request.token_budget,
            render=_render,
        )
        return pb.GetContextWindowResponse.FromString(rendered)

    async def SummarizeConversation(
        self, request: pb.SummarizeConversationRequest, context: ServicerContext
    ) -> pb.SummarizeConversationResponse:
        summary = await self._manager.summarize(
            current_caller(), *conversation_id(request.conversation, "conversation")
        )
        return pb.SummarizeConversationResponse(summary=cc.summary(summary))


def _render(window: ContextWindow) -> bytes:
    """The serialized response for ``window`` (what the context service caches)."""
    return pb.GetContextWindowResponse(
        items=cc.context_items(window),
        total_token_count=window.total_token_count,
        token_budget=window.token_budget,
    ).SerializeToString()
