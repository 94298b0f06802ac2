"""Tenant isolation, generated from the contracts.

Every RPC whose request names a resource (found through the
``google.api.resource_reference`` annotations) is called by an outsider with
another tenant's real resource names and with random ones of the same shape.
Both must fail the same way, byte for byte, and the resource must be intact.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.context.v1.conversation_pb2 import Conversation
from cortex.context.v1.conversation_service_pb2 import CreateConversationRequest
from cortex.context.v1.conversation_service_pb2_grpc import ConversationServiceStub
from cortex.context.v1.memory_pb2 import MEMORY_KIND_FACT, Memory
from cortex.context.v1.memory_service_pb2 import CreateMemoryRequest
from cortex.context.v1.memory_service_pb2_grpc import MemoryServiceStub
from google.api import resource_pb2
from google.protobuf import descriptor, field_mask_pb2, message_factory, symbol_database
from support.clients import Account, Client
from support.inprocess import running_app

import cortex_core.api.registry as registry

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def client(db_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    async with running_app(tmp_path, database_url=db_url) as running:
        client = Client(running.address)
        try:
            yield client
        finally:
            await client.close()


def _reference_type(field: descriptor.FieldDescriptor) -> str:
    """The resource type a request field points at ("" when it names none).

    A resource message names an existing resource by its ``name``, except in a
    ``Create`` request, where it is the new resource (only ``parent`` points).
    """
    options = field.GetOptions()
    if field.message_type is not None:
        if field.containing_type.name.startswith("Create"):
            return ""
        message_options = field.message_type.GetOptions()
        if message_options.HasExtension(resource_pb2.resource):
            return str(message_options.Extensions[resource_pb2.resource].type)
        return ""
    if options.HasExtension(resource_pb2.resource_reference):
        return str(options.Extensions[resource_pb2.resource_reference].type)
    return ""


def _names(alice: Account, workspace: str, conversation: str) -> dict[str, tuple[str, str]]:
    """Resource type → (another tenant's real name, a random name of that shape)."""
    rand = uuid.uuid4().hex
    return {
        "cortex.dev/Workspace": (workspace, f"workspaces/{rand}"),
        "cortex.dev/Session": (alice.session, f"{alice.user}/sessions/{rand}"),
        "cortex.dev/User": (alice.user, f"users/{rand}"),
        "cortex.dev/Conversation": (conversation, f"{workspace}/conversations/{rand}"),
    }


def _request(method: descriptor.MethodDescriptor, name_of: dict[str, str], email: str) -> Any:
    """A well-formed request whose resource fields all point at ``name_of``'s names."""
    cls = message_factory.GetMessageClass(method.input_type)
    request = cls()
    for field in method.input_type.fields:
        kind = _reference_type(field)
        if kind:
            if kind not in name_of:
                return None
            if field.message_type is not None:
                resource = getattr(request, field.name)
                resource.name = name_of[kind]
                for text_field in ("display_name", "title"):
                    if text_field in resource.DESCRIPTOR.fields_by_name:
                        setattr(resource, text_field, "renamed")
            else:
                setattr(request, field.name, name_of[kind])
        elif field.name == "email":
            request.email = email
        elif field.name == "role":
            request.role = 2
        elif field.name == "update_mask":
            paths = ["display_name" if "Workspace" in method.name else "title"]
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=paths))
    return request


def _details(error: grpc.aio.AioRpcError) -> tuple[Any, str, bytes]:
    raw = b""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            raw = bytes(value)
    return error.code(), error.details(), raw


async def test_another_tenants_resources_are_indistinguishable_from_missing_ones(
    client: Client,
) -> None:
    alice = await client.register()
    mallory = await client.register()
    workspace = (await client.first_workspace(alice)).name
    conversation = (
        await ConversationServiceStub(client.channel).CreateConversation(
            CreateConversationRequest(parent=workspace, conversation=Conversation(title="mine")),
            metadata=alice.metadata(),
        )
    ).conversation.name
    memory = (
        await MemoryServiceStub(client.channel).CreateMemory(
            CreateMemoryRequest(
                parent=workspace, memory=Memory(content="mine", kind=MEMORY_KIND_FACT)
            ),
            metadata=alice.metadata(),
        )
    ).memory.name
    pool = registry.service_names()
    checked: list[str] = []
    for service_name in pool:
        service = symbol_database.Default().pool.FindServiceByName(service_name)
        for method in service.methods:
            if method.server_streaming:
                continue
            names = _names(alice, workspace, conversation)
            names["cortex.dev/Memory"] = (memory, f"{workspace}/memories/{uuid.uuid4().hex}")
            real = _request(method, {k: v[0] for k, v in names.items()}, alice.email)
            fake = _request(method, {k: v[1] for k, v in names.items()}, alice.email)
            if real is None:
                continue
            if not any(_reference_type(f) for f in method.input_type.fields):
                continue
            call = client.channel.unary_unary(
                f"/{service_name}/{method.name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=lambda b: b,
            )
            outcomes = []
            for request in (real, fake):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call(request, metadata=mallory.metadata(), timeout=10)
                outcomes.append(_details(caught.value))
            if outcomes[0][0] is grpc.StatusCode.UNIMPLEMENTED:
                continue
            assert outcomes[0] == outcomes[1], method.full_name
            assert outcomes[0][0] in (
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
            ), method.full_name
            checked.append(method.full_name)

    assert {
        "cortex.sessions.v1.WorkspaceService.GetWorkspace",
        "cortex.sessions.v1.WorkspaceService.UpdateWorkspace",
        "cortex.sessions.v1.WorkspaceService.DeleteWorkspace",
        "cortex.sessions.v1.WorkspaceService.AddWorkspaceMember",
        "cortex.sessions.v1.WorkspaceService.RemoveWorkspaceMember",
        "cortex.sessions.v1.WorkspaceService.ListWorkspaceMembers",
        "cortex.sessions.v1.SessionService.RevokeSession",
        "cortex.sessions.v1.SessionService.ListSessions",
        "cortex.context.v1.ConversationService.GetConversation",
        "cortex.context.v1.ConversationService.UpdateConversation",
        "cortex.context.v1.ConversationService.DeleteConversation",
        "cortex.context.v1.ConversationService.ListMessages",
        "cortex.context.v1.ConversationService.CreateConversation",
        "cortex.context.v1.ConversationService.ListConversations",
        "cortex.context.v1.ContextService.GetContextWindow",
        "cortex.context.v1.ContextService.SummarizeConversation",
        "cortex.context.v1.MemoryService.CreateMemory",
        "cortex.context.v1.MemoryService.GetMemory",
        "cortex.context.v1.MemoryService.ListMemories",
        "cortex.context.v1.MemoryService.DeleteMemory",
        "cortex.context.v1.MemoryService.SearchMemories",
    } <= set(checked)

    # Alice's things are untouched.
    still = await client.first_workspace(alice)
    assert still.name == workspace
    assert still.display_name != "renamed"
    await client.me(alice)
