"""A complete tour of cortex-core-client against a running server (``make run``).

    python examples/quickstart.py [HOST:PORT]     (default 127.0.0.1:50051)

1. signs up (Register), then resumes the sign-in in a second client from the stored
   refresh token alone: five concurrent calls share one RefreshToken;
2. reads an error's details (a workspace without a display name: INVALID_ARGUMENT with a
   BadRequest violation on ``workspace.display_name``);
3. streams a reply (SendMessage) and cancels it after its first text;
4. follows the event stream, stops, and resumes from the saved resume token: the next event
   is the one right after the last seen (no gap, no duplicate);
5. runs a task on the ``experts/echo`` expert and watches it to its end.

Each step prints ``key=value`` lines; tests/e2e/test_client_examples.py runs it in CI.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

from cortex.context.v1 import conversation_pb2, conversation_service_pb2
from cortex.context.v1 import conversation_service_pb2_grpc as conversations
from cortex.experts.v1 import expert_service_pb2, task_pb2
from cortex.experts.v1 import expert_service_pb2_grpc as experts
from cortex.sessions.v1 import workspace_pb2, workspace_service_pb2
from cortex.sessions.v1 import workspace_service_pb2_grpc as workspaces
from cortex_client import (
    CortexClient,
    EventSubscription,
    InvalidArgument,
    Tokens,
    rich_errors,
    watch_task,
)
from google.protobuf import struct_pb2

PASSWORD = "correct horse battery staple 42"


async def main(address: str) -> None:
    email = f"quickstart-{uuid.uuid4().hex[:12]}@example.com"
    stored: list[Tokens] = []  # a real service would persist the rotated refresh token
    async with CortexClient(address, on_tokens=stored.append) as first:
        await first.register(email, PASSWORD, "Quickstart")
    print(f"registered={email}")

    # 1. A new process that kept only the refresh token: its first calls refresh once.
    resumed = Tokens(refresh_token=stored[-1].refresh_token)
    async with CortexClient(address, tokens=resumed, on_tokens=stored.append) as client:
        stub = workspaces.WorkspaceServiceStub(client.channel)
        listed = await asyncio.gather(
            *[stub.ListWorkspaces(workspace_service_pb2.ListWorkspacesRequest()) for _ in range(5)]
        )
        print(f"refreshes={client.auth.refresh_count}")
        print(f"workspaces={len(listed[0].workspaces)}")
        workspace = listed[0].workspaces[0].name

        # 2. Error details.
        try:
            with rich_errors():
                await stub.CreateWorkspace(
                    workspace_service_pb2.CreateWorkspaceRequest(
                        workspace=workspace_pb2.Workspace()
                    )
                )
        except InvalidArgument as error:
            print(f"error_code={error.code.name}")
            print(f"error_reason={error.reason}")
            print(f"error_field={error.violations[0].field}")

        # 3. Stream a reply and cancel it.
        chats = conversations.ConversationServiceStub(client.channel)
        created = await chats.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                parent=workspace, conversation=conversation_pb2.Conversation(title="quickstart")
            )
        )
        call = chats.SendMessage(
            conversation_service_pb2.SendMessageRequest(
                conversation=created.conversation.name,
                content="Tell me a long story.",
                idempotency_key=uuid.uuid4().hex,
            )
        )
        async for frame in call:
            if frame.WhichOneof("frame") == "delta":
                print("reply_started=true")
                call.cancel()
                break
        print(f"reply_cancelled={str(call.cancelled()).lower()}")

        # 4. Events, resumed from the saved token.
        await resume_events(client, chats, workspace)

        # 5. A task, watched to its end.
        tasks = experts.ExpertServiceStub(client.channel)
        task = await tasks.CreateTask(
            expert_service_pb2.CreateTaskRequest(
                parent=workspace,
                task=task_pb2.Task(
                    expert="experts/echo",
                    input=struct_pb2.Struct(fields={"text": struct_pb2.Value(string_value="hi")}),
                ),
            )
        )
        last = None
        async for update in watch_task(client.channel, task.task.name):
            if update.WhichOneof("frame") == "task":
                last = update.task
        assert last is not None
        print(f"task_state={task_pb2.TaskState.Name(last.state)}")


async def resume_events(
    client: CortexClient, chats: conversations.ConversationServiceAsyncStub, workspace: str
) -> None:
    """Sees one event live, stops, then resumes after it from its resume token."""
    subscription = EventSubscription(client.channel, workspaces=[workspace])
    events = aiter(subscription)

    async def first_event() -> object:
        return await anext(events)

    waiting = asyncio.ensure_future(first_event())
    while not waiting.done():  # the stream starts live: make events until one arrives
        await chats.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                parent=workspace, conversation=conversation_pb2.Conversation(title="probe")
            )
        )
        await asyncio.wait([waiting], timeout=0.2)
    seen = waiting.result()
    await events.aclose()  # type: ignore[attr-defined]
    token = subscription.resume_token
    await chats.CreateConversation(
        conversation_service_pb2.CreateConversationRequest(
            parent=workspace, conversation=conversation_pb2.Conversation(title="after")
        )
    )
    resumed = aiter(EventSubscription(client.channel, workspaces=[workspace], resume_token=token))
    following = await anext(resumed)
    await resumed.aclose()  # type: ignore[attr-defined]
    print(f"events_resumed_in_order={str(following.sequence == seen.sequence + 1).lower()}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051"))
