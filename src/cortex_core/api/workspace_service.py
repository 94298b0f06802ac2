"""``cortex.sessions.v1.WorkspaceService``: workspaces and their members."""

from __future__ import annotations

from cortex.sessions.v1 import workspace_service_pb2 as pb
from cortex.sessions.v1 import workspace_service_pb2_grpc as pb_grpc

from cortex_core import errors
from cortex_core.api import convert
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.domain import names
from cortex_core.domain.paging import PageRequest
from cortex_core.services.workspaces import Workspaces


def _workspace_id(name: str, field: str = "name") -> str:
    (workspace_id,) = convert.parse_name(name, names.WORKSPACE, field)
    return workspace_id


class WorkspaceService(pb_grpc.WorkspaceServiceServicer):
    def __init__(self, workspaces: Workspaces) -> None:
        self._workspaces = workspaces

    async def CreateWorkspace(
        self, request: pb.CreateWorkspaceRequest, context: ServicerContext
    ) -> pb.CreateWorkspaceResponse:
        try:
            view = await self._workspaces.create(
                current_caller(), request.workspace.display_name, request.workspace.description
            )
        except errors.InvalidArgument as exc:
            raise convert.prefix_violations(exc, "workspace.") from None
        return pb.CreateWorkspaceResponse(
            workspace=convert.workspace(view.workspace, view.caller_role)
        )

    async def GetWorkspace(
        self, request: pb.GetWorkspaceRequest, context: ServicerContext
    ) -> pb.GetWorkspaceResponse:
        view = await self._workspaces.get(current_caller(), _workspace_id(request.name))
        return pb.GetWorkspaceResponse(
            workspace=convert.workspace(view.workspace, view.caller_role)
        )

    async def ListWorkspaces(
        self, request: pb.ListWorkspacesRequest, context: ServicerContext
    ) -> pb.ListWorkspacesResponse:
        page = await self._workspaces.list(
            current_caller(), PageRequest.parse(request.page_size, request.page_token)
        )
        return pb.ListWorkspacesResponse(
            workspaces=[convert.workspace(v.workspace, v.caller_role) for v in page.items],
            next_page_token=page.next_page_token,
        )

    async def UpdateWorkspace(
        self, request: pb.UpdateWorkspaceRequest, context: ServicerContext
    ) -> pb.UpdateWorkspaceResponse:
        workspace_id = _workspace_id(request.workspace.name, "workspace.name")
        paths = [p for p in request.update_mask.paths if p != "*"]
        try:
            view = await self._workspaces.update(
                current_caller(),
                workspace_id,
                display_name=request.workspace.display_name,
                description=request.workspace.description,
                fields=paths,
                token_budget=request.workspace.token_budget,
            )
        except errors.InvalidArgument as exc:
            if any(v.field == "update_mask" for v in exc.violations):
                raise
            raise convert.prefix_violations(exc, "workspace.") from None
        return pb.UpdateWorkspaceResponse(
            workspace=convert.workspace(view.workspace, view.caller_role)
        )

    async def DeleteWorkspace(
        self, request: pb.DeleteWorkspaceRequest, context: ServicerContext
    ) -> pb.DeleteWorkspaceResponse:
        await self._workspaces.delete(current_caller(), _workspace_id(request.name))
        return pb.DeleteWorkspaceResponse()

    async def AddWorkspaceMember(
        self, request: pb.AddWorkspaceMemberRequest, context: ServicerContext
    ) -> pb.AddWorkspaceMemberResponse:
        member = await self._workspaces.add_member(
            current_caller(),
            _workspace_id(request.parent, "parent"),
            request.email,
            convert.role_from_proto(request.role),
        )
        return pb.AddWorkspaceMemberResponse(member=convert.member(member))

    async def RemoveWorkspaceMember(
        self, request: pb.RemoveWorkspaceMemberRequest, context: ServicerContext
    ) -> pb.RemoveWorkspaceMemberResponse:
        member = await self._workspaces.remove_member(
            current_caller(), _workspace_id(request.parent, "parent"), request.email
        )
        return pb.RemoveWorkspaceMemberResponse(member=convert.member(member))

    async def ListWorkspaceMembers(
        self, request: pb.ListWorkspaceMembersRequest, context: ServicerContext
    ) -> pb.ListWorkspaceMembersResponse:
        page = await self._workspaces.list_members(
            current_caller(),
            _workspace_id(request.parent, "parent"),
            PageRequest.parse(request.page_size, request.page_token),
        )
        return pb.ListWorkspaceMembersResponse(
            members=[convert.member(m) for m in page.items], next_page_token=page.next_page_token
        )
