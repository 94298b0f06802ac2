"""The event fan-out baseline: a bare grpc.aio server (uvloop, no interceptors, no auth).

``EventService/SubscribeEvents`` gives each stream an ``asyncio.Queue`` and
yields what arrives in it; ``WorkspaceService/UpdateWorkspace`` "publishes":
it builds one ``SubscribeEventsResponse`` carrying a ``workspace_updated``
event (with fields of the same sizes Cortex fills: id, workspace, sequence,
resume token, times, actor, update mask) and puts it in every queue. Same
messages as Cortex, so serialization costs the same; ``AuthService/Register``
and ``WorkspaceService/ListWorkspaces`` answer constants so the same client
code drives both servers.

It prints ``serving on HOST:PORT`` and stops when its stdin closes."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import AsyncIterator

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.events.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from cortex.sessions.v1 import workspace_pb2, workspace_service_pb2, workspace_service_pb2_grpc
from google.protobuf import field_mask_pb2, timestamp_pb2

WORKSPACE_ID = "01JBENCHBAREWORKSPACE00000"
USER_ID = "01JBENCHBAREUSER0000000000"
WORKSPACE = workspace_pb2.Workspace(
    name=f"workspaces/{WORKSPACE_ID}",
    display_name="Personal",
    caller_role=workspace_pb2.WORKSPACE_ROLE_OWNER,
)


class Events(event_service_pb2_grpc.EventServiceServicer):
    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[event_service_pb2.SubscribeEventsResponse]] = set()

    async def SubscribeEvents(  # type: ignore[override]
        self, request: object, context: object
    ) -> AsyncIterator[event_service_pb2.SubscribeEventsResponse]:
        queue: asyncio.Queue[event_service_pb2.SubscribeEventsResponse] = asyncio.Queue()
        self.queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.queues.discard(queue)


class Workspaces(workspace_service_pb2_grpc.WorkspaceServiceServicer):
    def __init__(self, events: Events) -> None:
        self._events = events
        self._sequence = 0

    async def ListWorkspaces(self, request: object, context: object) -> object:
        return workspace_service_pb2.ListWorkspacesResponse(workspaces=[WORKSPACE])

    async def UpdateWorkspace(  # type: ignore[override]
        self, request: workspace_service_pb2.UpdateWorkspaceRequest, context: object
    ) -> object:
        self._sequence += 1
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        workspace = workspace_pb2.Workspace()
        workspace.CopyFrom(WORKSPACE)
        workspace.display_name = request.workspace.display_name
        workspace.create_time.CopyFrom(now)
        workspace.update_time.CopyFrom(now)
        positions = {f"user:{USER_ID}": 1, f"ws:{WORKSPACE_ID}": self._sequence}
        token = base64.urlsafe_b64encode(json.dumps(positions, sort_keys=True).encode())
        frame = event_service_pb2.SubscribeEventsResponse(
            event=event_pb2.Event(
                id=f"{self._sequence:026d}",
                workspace=WORKSPACE.name,
                sequence=self._sequence,
                resume_token="v1." + token.decode().rstrip("="),
                create_time=now,
                actor=f"users/{USER_ID}",
                type=event_pb2.EVENT_TYPE_WORKSPACE_UPDATED,
                workspace_updated=event_pb2.WorkspaceUpdated(
                    workspace=workspace,
                    update_mask=field_mask_pb2.FieldMask(paths=list(request.update_mask.paths)),
                ),
            )
        )
        for queue in self._events.queues:
            queue.put_nowait(frame)
        return workspace_service_pb2.UpdateWorkspaceResponse(workspace=workspace)


class Auth(auth_service_pb2_grpc.AuthServiceServicer):
    async def Register(self, request: object, context: object) -> object:
        return auth_service_pb2.RegisterResponse(access_token="bare")


async def main() -> None:
    server = grpc.aio.server()
    events = Events()
    event_service_pb2_grpc.add_EventServiceServicer_to_server(events, server)
    workspace_service_pb2_grpc.add_WorkspaceServiceServicer_to_server(Workspaces(events), server)
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(Auth(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


if __name__ == "__main__":
    uvloop.run(main())
