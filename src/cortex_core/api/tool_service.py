"""``cortex.experts.v1.ToolService``: list the tools, invoke one for a workspace."""

from __future__ import annotations

from cortex.experts.v1 import tool_service_pb2 as pb
from cortex.experts.v1 import tool_service_pb2_grpc as pb_grpc

from cortex_core import errors
from cortex_core.api import convert
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.api.convert_tools import json_object, struct, tool, tool_id
from cortex_core.api.status import to_status_proto
from cortex_core.domain import names
from cortex_core.domain.paging import PageRequest
from cortex_core.services.tools import Tools


class ToolService(pb_grpc.ToolServiceServicer):
    def __init__(self, tools: Tools) -> None:
        self._tools = tools

    async def ListTools(
        self, request: pb.ListToolsRequest, context: ServicerContext
    ) -> pb.ListToolsResponse:
        page = self._tools.list(
            current_caller(), PageRequest.parse(request.page_size, request.page_token)
        )
        return pb.ListToolsResponse(
            tools=[tool(t) for t in page.items], next_page_token=page.next_page_token
        )

    async def InvokeTool(
        self, request: pb.InvokeToolRequest, context: ServicerContext
    ) -> pb.InvokeToolResponse:
        tool_name = tool_id(request.name)
        (workspace_id,) = convert.parse_name(request.workspace, names.WORKSPACE, "workspace")
        outcome = await self._tools.invoke(
            current_caller(),
            tool_name,
            workspace_id,
            json_object(request.input),
            time_left=context.time_remaining(),
        )
        if outcome.failure is not None:
            return pb.InvokeToolResponse(error=to_status_proto(outcome.failure))
        assert outcome.output is not None
        try:
            output = struct(outcome.output)
        except (ValueError, TypeError):
            failure = errors.ToolFailed(
                f"tool {tool_name!r} gave output that is not a JSON object",
                metadata={"tool": tool_name, "code": "INVALID_RESULT"},
            )
            return pb.InvokeToolResponse(error=to_status_proto(failure))
        return pb.InvokeToolResponse(output=output)
