"""``cortex.context.v1.ContextService``: explain and manage the context window."""

from __future__ import annotations

from typing import Any

from cortex.context.v1 import context_service_pb2 as pb
from cortex.context.v1 import context_service_pb2_grpc as pb_grpc

from cortex_core.api import convert_conversations as cc
from cortex_core.api.context import current_caller
from cortex_core.api.conversation_service import conversation_id
from cortex_core.domain.cache_keys import context_window_key
from cortex_core.services.context import ContextManager

WINDOW_TTL = 300.0


class ContextService(pb_grpc.ContextServiceServicer):
    """Windows are cached (serialized responses, per conversation, budget and user)
    and dropped by every write that changes them: messages, summaries, conversation
    edits, and memory changes in the workspace."""

    def __init__(self, manager: ContextManager) -> None:
        self._manager = manager

    async def GetContextWindow(
        self, request: pb.GetContextWindowRequest, context: Any
    ) -> pb.GetContextWindowResponse:
        caller = current_caller()
        workspace_id, conv_id = conversation_id(request.conversation, "conversation")
        budget = request.token_budget or self._manager.default_budget
        key = context_window_key(workspace_id, conv_id, f"{budget}:{caller.user_id}")
        # Authorization on every call: a cached window is only served to a member.
        conversation = await self._manager.readable(caller, workspace_id, conv_id)
        cached = await self._manager.cache.get(key)
        if cached is not None:
            return pb.GetContextWindowResponse.FromString(cached)
        window = await self._manager.window(conversation, caller.user, request.token_budget)
        response = pb.GetContextWindowResponse(
            items=cc.context_items(window),
            total_token_count=window.total_token_count,
            token_budget=window.token_budget,
        )
        await self._manager.cache.set(key, response.SerializeToString(), WINDOW_TTL)
        return response

    async def SummarizeConversation(
        self, request: pb.SummarizeConversationRequest, context: Any
    ) -> pb.SummarizeConversationResponse:
        summary = await self._manager.summarize(
            current_caller(), *conversation_id(request.conversation, "conversation")
        )
        return pb.SummarizeConversationResponse(summary=cc.summary(summary))
