"""Workspaces and members: roles decide who may read, write and manage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cortex.sessions.v1.workspace_pb2 import Workspace
from google.protobuf import field_mask_pb2
from support.clients import Client, workspace_pb
from support.inprocess import running_app
from support.rpc import details

OWNER, EDITOR, VIEWER = 1, 2, 3


@pytest.fixture
async def client(db_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    async with running_app(tmp_path, database_url=db_url) as running:
        client = Client(running.address)
        try:
            yield client
        finally:
            await client.close()


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


async def test_a_workspace_is_created_read_renamed_listed_and_deleted(client: Client) -> None:
    owner = await client.register()
    ws = client.workspaces
    created = (
        await ws.CreateWorkspace(
            workspace_pb.CreateWorkspaceRequest(
                workspace=Workspace(display_name="Research", description="papers")
            ),
            metadata=owner.metadata(),
        )
    ).workspace
    assert created.name.startswith("workspaces/")
    assert created.caller_role == OWNER
    fetched = (
        await ws.GetWorkspace(
            workspace_pb.GetWorkspaceRequest(name=created.name), metadata=owner.metadata()
        )
    ).workspace
    assert (fetched.display_name, fetched.description) == ("Research", "papers")

    renamed = (
        await ws.UpdateWorkspace(
            workspace_pb.UpdateWorkspaceRequest(
                workspace=Workspace(name=created.name, display_name="Lab", description="ignored"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=owner.metadata(),
        )
    ).workspace
    assert (renamed.display_name, renamed.description) == ("Lab", "papers")

    listed = await ws.ListWorkspaces(
        workspace_pb.ListWorkspacesRequest(page_size=1), metadata=owner.metadata()
    )
    assert len(listed.workspaces) == 1
    assert listed.next_page_token
    rest = await ws.ListWorkspaces(
        workspace_pb.ListWorkspacesRequest(page_size=1, page_token=listed.next_page_token),
        metadata=owner.metadata(),
    )
    assert [w.name for w in rest.workspaces] == [created.name]
    assert rest.next_page_token == ""

    await ws.DeleteWorkspace(
        workspace_pb.DeleteWorkspaceRequest(name=created.name), metadata=owner.metadata()
    )
    gone = await _error(
        ws.GetWorkspace(
            workspace_pb.GetWorkspaceRequest(name=created.name), metadata=owner.metadata()
        )
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND


async def test_invalid_fields_are_reported_on_their_paths(client: Client) -> None:
    owner = await client.register()
    error = await _error(
        client.workspaces.CreateWorkspace(
            workspace_pb.CreateWorkspaceRequest(workspace=Workspace(display_name="  ")),
            metadata=owner.metadata(),
        )
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in details(error)["BadRequest"].field_violations]
    assert fields == ["workspace.display_name"]
    bad_name = await _error(
        client.workspaces.GetWorkspace(
            workspace_pb.GetWorkspaceRequest(name="projects/1"), metadata=owner.metadata()
        )
    )
    assert bad_name.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_owners_manage_members_and_roles_limit_the_others(client: Client) -> None:
    owner = await client.register()
    editor = await client.register()
    viewer = await client.register()
    ws = client.workspaces
    name = (await client.first_workspace(owner)).name
    for account, role in ((editor, EDITOR), (viewer, VIEWER)):
        added = await ws.AddWorkspaceMember(
            workspace_pb.AddWorkspaceMemberRequest(parent=name, email=account.email, role=role),
            metadata=owner.metadata(),
        )
        assert added.member.role == role
        assert added.member.email == account.email

    members = await ws.ListWorkspaceMembers(
        workspace_pb.ListWorkspaceMembersRequest(parent=name), metadata=viewer.metadata()
    )
    assert [(m.email, m.role) for m in members.members] == [
        (owner.email, OWNER),
        (editor.email, EDITOR),
        (viewer.email, VIEWER),
    ]
    seen_by_viewer = (
        await ws.GetWorkspace(
            workspace_pb.GetWorkspaceRequest(name=name), metadata=viewer.metadata()
        )
    ).workspace
    assert seen_by_viewer.caller_role == VIEWER

    for account in (editor, viewer):
        denied = await _error(
            ws.UpdateWorkspace(
                workspace_pb.UpdateWorkspaceRequest(
                    workspace=Workspace(name=name, display_name="x")
                ),
                metadata=account.metadata(),
            )
        )
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
        assert details(denied)["ErrorInfo"].reason == "OWNER_REQUIRED"
    not_owner = await _error(
        ws.AddWorkspaceMember(
            workspace_pb.AddWorkspaceMemberRequest(parent=name, email=owner.email, role=VIEWER),
            metadata=editor.metadata(),
        )
    )
    assert not_owner.code() is grpc.StatusCode.PERMISSION_DENIED
    again = await _error(
        ws.AddWorkspaceMember(
            workspace_pb.AddWorkspaceMemberRequest(parent=name, email=viewer.email, role=EDITOR),
            metadata=owner.metadata(),
        )
    )
    assert again.code() is grpc.StatusCode.ALREADY_EXISTS

    # A member may leave; the last owner may not.
    await ws.RemoveWorkspaceMember(
        workspace_pb.RemoveWorkspaceMemberRequest(parent=name, email=viewer.email),
        metadata=viewer.metadata(),
    )
    left = await _error(
        ws.GetWorkspace(workspace_pb.GetWorkspaceRequest(name=name), metadata=viewer.metadata())
    )
    assert left.code() is grpc.StatusCode.NOT_FOUND
    last = await _error(
        ws.RemoveWorkspaceMember(
            workspace_pb.RemoveWorkspaceMemberRequest(parent=name, email=owner.email),
            metadata=owner.metadata(),
        )
    )
    assert last.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert details(last)["ErrorInfo"].reason == "LAST_OWNER"


async def test_adding_an_unknown_email_is_not_found(client: Client) -> None:
    owner = await client.register()
    name = (await client.first_workspace(owner)).name
    error = await _error(
        client.workspaces.AddWorkspaceMember(
            workspace_pb.AddWorkspaceMemberRequest(
                parent=name, email="ghost@example.com", role=VIEWER
            ),
            metadata=owner.metadata(),
        )
    )
    assert error.code() is grpc.StatusCode.NOT_FOUND
