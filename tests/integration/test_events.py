"""SubscribeEvents over a real server: live events, resume, filters and authorization."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc
from cortex.context.v1.conversation_pb2 import Conversation
from cortex.events.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from cortex.sessions.v1.workspace_pb2 import Workspace
from google.protobuf import field_mask_pb2
from support.clients import Account, Client, auth_pb, workspace_pb
from support.inprocess import running_app
from support.rpc import details


class Events:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.stub = event_service_pb2_grpc.EventServiceStub(client.channel)

    def subscribe(self, account: Account, **request: Any) -> Any:
        return self.stub.SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(**request), metadata=account.metadata()
        )

    async def rename(self, account: Account, workspace: str, name: str) -> None:
        await self.client.workspaces.UpdateWorkspace(
            workspace_pb.UpdateWorkspaceRequest(
                workspace=Workspace(name=workspace, display_name=name),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=account.metadata(),
        )


@pytest.fixture
async def events(db_url: str, tmp_path: Path) -> AsyncIterator[Events]:
    async with running_app(
        tmp_path, database_url=db_url, events_heartbeat=0.3, access_token_ttl=30
    ) as running:
        client = Client(running.address)
        try:
            yield Events(client)
        finally:
            await client.close()


async def _next_event(stream: Any) -> event_pb2.Event:
    """The next event frame, skipping heartbeats."""
    async with asyncio.timeout(10):
        while True:
            frame = await stream.read()
            assert frame is not grpc.aio.EOF
            if frame.WhichOneof("frame") == "event":
                return frame.event


async def _ended(stream: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async with asyncio.timeout(10):
            while True:
                await stream.read()
    return caught.value


async def test_a_change_reaches_subscribers_as_a_typed_event(events: Events) -> None:
    alice = await events.client.register()
    workspace = (await events.client.first_workspace(alice)).name
    stream = events.subscribe(alice)
    first = await stream.read()  # the stream is open once the first heartbeat arrives
    assert first.WhichOneof("frame") == "heartbeat"
    await events.rename(alice, workspace, "Renamed")
    event = await _next_event(stream)
    assert event.type == event_pb2.EVENT_TYPE_WORKSPACE_UPDATED
    assert event.workspace_updated.workspace.display_name == "Renamed"
    assert list(event.workspace_updated.update_mask.paths) == ["display_name"]
    assert event.workspace == workspace
    assert event.actor == alice.user
    assert event.sequence > 0
    assert event.resume_token
    stream.cancel()


async def test_resuming_replays_what_was_missed_exactly_once(events: Events) -> None:
    alice = await events.client.register()
    workspace = (await events.client.first_workspace(alice)).name
    stream = events.subscribe(alice, workspaces=[workspace])
    await stream.read()
    await events.rename(alice, workspace, "n0")
    token = (await _next_event(stream)).resume_token
    stream.cancel()
    for n in range(1, 6):
        await events.rename(alice, workspace, f"n{n}")
    resumed = events.subscribe(alice, workspaces=[workspace], resume_token=token)
    names = [
        (await _next_event(resumed)).workspace_updated.workspace.display_name for _ in range(5)
    ]
    await events.rename(alice, workspace, "n6")
    names.append((await _next_event(resumed)).workspace_updated.workspace.display_name)
    assert names == [f"n{n}" for n in range(1, 7)]
    resumed.cancel()


async def test_event_type_filters_leave_out_other_events(events: Events) -> None:
    alice = await events.client.register()
    bob = await events.client.register()
    workspace = (await events.client.first_workspace(alice)).name
    stream = events.subscribe(alice, event_types=[event_pb2.EVENT_TYPE_MEMBER_ADDED])
    await stream.read()
    await events.rename(alice, workspace, "ignored")
    await events.client.workspaces.AddWorkspaceMember(
        workspace_pb.AddWorkspaceMemberRequest(parent=workspace, email=bob.email, role=3),
        metadata=alice.metadata(),
    )
    event = await _next_event(stream)
    assert event.type == event_pb2.EVENT_TYPE_MEMBER_ADDED
    assert event.member_added.member.email == bob.email
    stream.cancel()


async def test_nobody_receives_events_of_a_workspace_they_are_not_in(events: Events) -> None:
    alice = await events.client.register()
    mallory = await events.client.register()
    workspace = (await events.client.first_workspace(alice)).name
    refused = events.subscribe(mallory, workspaces=[workspace])
    error = await _ended(refused)
    assert error.code() is grpc.StatusCode.NOT_FOUND

    spy = events.subscribe(mallory)
    await spy.read()
    await events.rename(alice, workspace, "secret plans")
    mallory_ws = (await events.client.first_workspace(mallory)).name
    await events.rename(mallory, mallory_ws, "mine")
    event = await _next_event(spy)
    assert event.workspace == mallory_ws  # alice's event never arrived before it
    spy.cancel()


async def test_logging_out_ends_open_streams_with_unauthenticated(events: Events) -> None:
    alice = await events.client.register()
    stream = events.subscribe(alice)
    await stream.read()
    await events.client.auth.Logout(auth_pb.LogoutRequest(), metadata=alice.metadata())
    error = await _ended(stream)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_an_expired_access_token_ends_the_stream(db_url: str, tmp_path: Path) -> None:
    async with running_app(
        tmp_path, database_url=db_url, events_heartbeat=0.3, access_token_ttl=1.5
    ) as running:
        events = Events(Client(running.address))
        try:
            alice = await events.client.register()
            stream = events.subscribe(alice)
            error = await _ended(stream)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert details(error)["ErrorInfo"].reason == "TOKEN_EXPIRED"
        finally:
            await events.client.close()


async def test_removal_from_the_last_workspace_ends_the_stream(events: Events) -> None:
    alice = await events.client.register()
    bob = await events.client.register()
    workspace = (await events.client.first_workspace(alice)).name
    await events.client.workspaces.AddWorkspaceMember(
        workspace_pb.AddWorkspaceMemberRequest(parent=workspace, email=bob.email, role=3),
        metadata=alice.metadata(),
    )
    stream = events.subscribe(bob, workspaces=[workspace])
    await stream.read()
    await events.rename(alice, workspace, "before")
    assert (await _next_event(stream)).workspace_updated.workspace.display_name == "before"
    await events.client.workspaces.RemoveWorkspaceMember(
        workspace_pb.RemoveWorkspaceMemberRequest(parent=workspace, email=bob.email),
        metadata=alice.metadata(),
    )
    error = await _ended(stream)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_forged_resume_token_is_invalid_argument(events: Events) -> None:
    alice = await events.client.register()
    error = await _ended(events.subscribe(alice, resume_token="not a token"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(error)["ErrorInfo"].reason == "INVALID_RESUME_TOKEN"


async def test_a_token_older_than_retention_gets_an_explicit_first_frame(
    db_url: str, tmp_path: Path
) -> None:
    async with running_app(
        tmp_path, database_url=db_url, events_heartbeat=0.3, events_max_length=3
    ) as running:
        events = Events(Client(running.address))
        try:
            alice = await events.client.register()
            workspace = (await events.client.first_workspace(alice)).name
            stream = events.subscribe(alice, workspaces=[workspace])
            await stream.read()
            await events.rename(alice, workspace, "n0")
            token = (await _next_event(stream)).resume_token
            stream.cancel()
            for n in range(1, 8):
                await events.rename(alice, workspace, f"n{n}")
            resumed = events.subscribe(alice, workspaces=[workspace], resume_token=token)
            async with asyncio.timeout(10):
                first = await resumed.read()
            assert first.WhichOneof("frame") == "replay_unavailable"
            assert first.replay_unavailable.workspace == workspace
            assert first.replay_unavailable.oldest_available_sequence > (
                first.replay_unavailable.requested_sequence + 1
            )
            names = [
                (await _next_event(resumed)).workspace_updated.workspace.display_name
                for _ in range(3)
            ]
            assert names == ["n5", "n6", "n7"]
            resumed.cancel()
        finally:
            await events.client.close()


# A client that reads nothing soon stops taking frames: a small flow-control window, so
# what the server sends such a listener piles up in its queue, as with a slow consumer.
_SMALL_WINDOW = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024))


async def test_a_burst_across_conversations_cuts_no_conversation_filtered_listener(
    db_url: str, tmp_path: Path
) -> None:
    conversations, renames = 30, 3
    async with running_app(
        tmp_path, database_url=db_url, events_heartbeat=0.3, events_queue_size=renames + 1
    ) as running:
        client = Client(running.address)
        listeners_channel = grpc.aio.insecure_channel(running.address, options=_SMALL_WINDOW)
        try:
            events = Events(client)
            alice = await client.register()
            workspace = (await client.first_workspace(alice)).name
            stub = conversation_service_pb2_grpc.ConversationServiceStub(client.channel)
            names = [
                (
                    await stub.CreateConversation(
                        cpb.CreateConversationRequest(
                            parent=workspace, conversation=Conversation(title=f"c{i}")
                        ),
                        metadata=alice.metadata(),
                    )
                ).conversation.name
                for i in range(conversations)
            ]
            listeners = event_service_pb2_grpc.EventServiceStub(listeners_channel)
            streams = [
                listeners.SubscribeEvents(
                    event_service_pb2.SubscribeEventsRequest(conversation=name),
                    metadata=alice.metadata(),
                )
                for name in names
            ]
            for stream in streams:  # open: each has had its first heartbeat
                async with asyncio.timeout(10):
                    assert (await stream.read()).WhichOneof("frame") == "heartbeat"

            async def rename(name: str, title: str) -> None:
                await stub.UpdateConversation(
                    cpb.UpdateConversationRequest(
                        conversation=Conversation(name=name, title=title),
                        update_mask=field_mask_pb2.FieldMask(paths=["title"]),
                    ),
                    metadata=alice.metadata(),
                )

            await asyncio.gather(
                *(rename(name, f"{name} #{k}") for k in range(renames) for name in names)
            )
            await events.rename(alice, workspace, "also not for the listeners")

            for name, stream in zip(names, streams, strict=True):
                titles = []
                async with asyncio.timeout(10):
                    while True:
                        frame = await stream.read()
                        assert frame is not grpc.aio.EOF
                        if frame.WhichOneof("frame") == "event":
                            assert frame.event.conversation_updated.conversation.name == name
                            titles.append(frame.event.conversation_updated.conversation.title)
                        elif len(titles) == renames:
                            break  # quiet after its events: nothing else was queued
                assert sorted(titles) == [f"{name} #{k}" for k in range(renames)]
                stream.cancel()
        finally:
            await listeners_channel.close()
            await client.close()
