"""``cortex.context.v1.ConversationService``: conversations, messages, replies."""

from __future__ import annotations

import contextlib

from cortex.context.v1 import conversation_service_pb2 as pb
from cortex.context.v1 import conversation_service_pb2_grpc as pb_grpc

from cortex_core import errors
from cortex_core.api import convert, status
from cortex_core.api import convert_conversations as cc
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.api.reply_writer import ReplyWriter
from cortex_core.domain import names
from cortex_core.domain.paging import PageRequest
from cortex_core.domain.tools import ToolApproval
from cortex_core.services import conversations as uc
from cortex_core.services import replies


def conversation_id(name: str, field: str) -> tuple[str, str]:
    workspace_id, conv_id = convert.parse_name(name, names.CONVERSATION, field)
    return workspace_id, conv_id


class ConversationService(pb_grpc.ConversationServiceServicer):
    def __init__(self, conversations: uc.Conversations, replier: replies.Replies) -> None:
        self._conversations = conversations
        self._replies = replier

    async def CreateConversation(
        self, request: pb.CreateConversationRequest, context: ServicerContext
    ) -> pb.CreateConversationResponse:
        (workspace_id,) = convert.parse_name(request.parent, names.WORKSPACE, "parent")
        try:
            created = await self._conversations.create(
                current_caller(),
                workspace_id,
                request.conversation.title,
                request.conversation.system_prompt,
                list(request.conversation.tools),
            )
        except errors.InvalidArgument as exc:
            raise convert.prefix_violations(exc, "conversation.") from None
        return pb.CreateConversationResponse(conversation=cc.conversation(created))

    async def GetConversation(
        self, request: pb.GetConversationRequest, context: ServicerContext
    ) -> pb.GetConversationResponse:
        found = await self._conversations.get(
            current_caller(), *conversation_id(request.name, "name")
        )
        return pb.GetConversationResponse(conversation=cc.conversation(found))

    async def ListConversations(
        self, request: pb.ListConversationsRequest, context: ServicerContext
    ) -> pb.ListConversationsResponse:
        (workspace_id,) = convert.parse_name(request.parent, names.WORKSPACE, "parent")
        page = await self._conversations.list(
            current_caller(), workspace_id, PageRequest.parse(request.page_size, request.page_token)
        )
        return pb.ListConversationsResponse(
            conversations=[cc.conversation(c) for c in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateConversation(
        self, request: pb.UpdateConversationRequest, context: ServicerContext
    ) -> pb.UpdateConversationResponse:
        ids = conversation_id(request.conversation.name, "conversation.name")
        try:
            updated = await self._conversations.update(
                current_caller(),
                *ids,
                title=request.conversation.title,
                system_prompt=request.conversation.system_prompt,
                tools=list(request.conversation.tools),
                fields=[p for p in request.update_mask.paths if p != "*"],
            )
        except errors.InvalidArgument as exc:
            if any(v.field == "update_mask" for v in exc.violations):
                raise
            raise convert.prefix_violations(exc, "conversation.") from None
        return pb.UpdateConversationResponse(conversation=cc.conversation(updated))

    async def DeleteConversation(
        self, request: pb.DeleteConversationRequest, context: ServicerContext
    ) -> pb.DeleteConversationResponse:
        await self._conversations.delete(current_caller(), *conversation_id(request.name, "name"))
        return pb.DeleteConversationResponse()

    async def ListMessages(
        self, request: pb.ListMessagesRequest, context: ServicerContext
    ) -> pb.ListMessagesResponse:
        page = await self._conversations.list_messages(
            current_caller(),
            *conversation_id(request.parent, "parent"),
            page_size=request.page_size,
            page_token=request.page_token,
            newest_first=request.order == pb.MESSAGE_ORDER_NEWEST_FIRST,
        )
        return pb.ListMessagesResponse(
            messages=[cc.message(m) for m in page.messages],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
        )

    # grpc.aio lets a server stream write its frames (context.write) instead of yielding
    # them, which the generated servicer's typed signature (an iterator) does not describe.
    async def SendMessage(  # type: ignore[override]
        self, request: pb.SendMessageRequest, context: ServicerContext
    ) -> None:
        """Frames are written by a :class:`ReplyWriter` (text that arrives while a
        write is in flight joins the next delta)."""
        workspace_id, conv_id = conversation_id(request.conversation, "conversation")
        approvals = [
            ToolApproval(a.tool_call_id, cc.approval_decision(a.decision))
            for a in request.approvals
        ]
        steps = self._replies.send(
            current_caller(),
            workspace_id,
            conv_id,
            request.content,
            request.idempotency_key,
            approvals,
            time_left=context.time_remaining(),
        )
        async with ReplyWriter(context) as writer, contextlib.aclosing(steps) as closing:
            async for step in closing:
                if isinstance(step, replies.ReplyText):
                    await writer.text(step.text)
                else:
                    await writer.frame(_frame(step))


def _frame(step: replies.ReplyStep) -> pb.SendMessageResponse:
    """Every frame but a delta."""
    if isinstance(step, replies.ToolCallAsked):
        return pb.SendMessageResponse(tool_call=cc.tool_call(step.call))
    if isinstance(step, replies.ToolCallAnswered):
        return pb.SendMessageResponse(tool_result=cc.tool_result(step.result))
    if isinstance(step, replies.ReplyHeartbeat):
        return pb.SendMessageResponse(
            heartbeat=pb.Heartbeat(server_time=convert.timestamp(step.time))
        )
    if isinstance(step, replies.UserMessageStored):
        return pb.SendMessageResponse(user_message=cc.message(step.message))
    if isinstance(step, replies.ReplyUsage):
        return pb.SendMessageResponse(
            usage=pb.ReplyUsage(
                prompt_tokens=step.usage.prompt_tokens,
                completion_tokens=step.usage.completion_tokens,
            )
        )
    assert isinstance(step, replies.ReplyFinished)
    return pb.SendMessageResponse(
        completion=pb.ReplyCompletion(
            message=cc.message(step.message),
            finish_reason=cc.FINISH_REASONS[step.finish_reason],
            provider=step.provider,
            model=step.model,
            error=status.to_status_proto(step.error) if step.error else None,
        )
    )
