"""``cortex-core chat``: a small terminal client for people.

It logs in (``AuthService/Login``, after ``Register`` with ``--register``), opens a
conversation (``--conversation NAME`` or a new one in the user's first workspace),
then sends each line typed to ``ConversationService/SendMessage`` and prints the
reply as it streams, followed by a dim line with the finish reason, provider/model
and usage. ``/quit`` or end of input exits 0; Ctrl-C during a reply cancels the
call (the server stores the partial reply) and returns to the prompt; Ctrl-C at the
prompt exits 130. Errors print the gRPC status, the ``ErrorInfo`` reason and
one line per ``BadRequest`` field violation (``  password: is too common …``).

Tools: ``--tool tools/ID`` (repeatable) lets a new conversation's replies call
that tool. Each call and result prints as a dim line; a reply that stops for
approval lists the pending call ids, and ``/approve ID`` or ``/deny ID`` (one
line per decision, or ``/approve`` alone for every pending call) continues it.
With the local development provider, a line ``/call cortex.current_time {}``
makes it call a tool (docs/context.md).

Before asking for anything it checks that the server answers (the standard
health ``Check``), so a wrong address fails at once instead of after typing a
password. The password is asked with ``getpass``; for scripted use it is read
from ``CORTEX_CHAT_PASSWORD`` instead. The server address is ``--address``, else
``CORTEX_GRPC_ADDRESS``, else ``127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import uuid
from typing import Any, TextIO

import grpc
import grpc.aio
from cortex.context.v1 import (
    conversation_pb2,
    conversation_service_pb2,
    conversation_service_pb2_grpc,
    message_pb2,
)
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from cortex_client import CortexClient, CortexError
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_ENV = "CORTEX_GRPC_ADDRESS"
PASSWORD_ENV = "CORTEX_CHAT_PASSWORD"
CALL_TIMEOUT = 30.0
REACH_TIMEOUT = 5.0
REPLY_TIMEOUT = 600.0
REFRESH_MARGIN = 60.0  # seconds before the access token expires (cortex_client refreshes)

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


class ChatError(Exception):
    """A failure already worded for the user."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=None,
        help=f"server HOST:PORT (default ${ADDRESS_ENV}, else {DEFAULT_ADDRESS})",
    )
    parser.add_argument("--email", default=None, help="account email (asked when omitted)")
    parser.add_argument(
        "--register", action="store_true", help="create the account first (asks a display name)"
    )
    parser.add_argument("--display-name", default=None, help="display name for --register")
    parser.add_argument(
        "--conversation",
        metavar="NAME",
        default=None,
        help="workspaces/W/conversations/C to continue (default: a new one in the first workspace)",
    )
    parser.add_argument(
        "--tool",
        metavar="NAME",
        action="append",
        default=[],
        help="tools/ID a new conversation's replies may call (repeatable)",
    )


def status_reason(status: Any) -> str:
    """The ``ErrorInfo`` reason in a ``google.rpc.Status``, or ``""``."""
    return CortexError.from_status(status).reason


def describe(error: grpc.RpcError | CortexError) -> str:
    """``CODE (REASON): details``, then one indented line per field violation."""
    if isinstance(error, CortexError):
        return error.describe()
    if not isinstance(error, grpc.aio.AioRpcError):
        return str(error)
    return CortexError.from_rpc_error(error).describe()


class Chat:
    """One signed-in user talking to one conversation."""

    def __init__(self, address: str, out: TextIO) -> None:
        self._address = address
        self._out = out
        self._dim = out.isatty() and not os.environ.get("NO_COLOR")
        self._client: CortexClient | None = None
        self.conversation = ""
        self.pending: list[str] = []  # ids of the calls the last reply left waiting

    @property
    def _session(self) -> CortexClient:
        """The channel; its calls carry the signed-in user's token, refreshed as needed."""
        if self._client is None:
            self._client = CortexClient(self._address, refresh_margin=REFRESH_MARGIN)
        return self._client

    @property
    def _chan(self) -> grpc.aio.Channel:
        return self._session.channel

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def check_reachable(self) -> None:
        """Raise :class:`ChatError` unless the server answers a health check."""
        health = health_pb2_grpc.HealthStub(self._chan)
        try:
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=REACH_TIMEOUT)
        except (grpc.RpcError, CortexError) as error:
            raise ChatError(
                f"cannot reach a Cortex server at {self._address} ({describe(error)})"
            ) from None
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            raise ChatError(f"the server at {self._address} is not serving yet; retry shortly")

    async def sign_in(self, email: str, password: str, display_name: str | None) -> None:
        """Raises ``CortexError`` (a ``grpc.RpcError`` cause) when Cortex refuses."""
        if display_name is not None:
            await self._session.register(email, password, display_name, call_timeout=CALL_TIMEOUT)
        await self._session.login(email, password, call_timeout=CALL_TIMEOUT)

    async def open(self, name: str | None, tools: list[str] | None = None) -> str:
        stub = conversation_service_pb2_grpc.ConversationServiceStub(self._chan)
        if name:
            found = await stub.GetConversation(
                conversation_service_pb2.GetConversationRequest(name=name),
                timeout=CALL_TIMEOUT,
            )
            self.conversation = str(found.conversation.name)
            return self.conversation
        workspaces = workspace_service_pb2_grpc.WorkspaceServiceStub(self._chan)
        listed = await workspaces.ListWorkspaces(
            workspace_service_pb2.ListWorkspacesRequest(page_size=1),
            timeout=CALL_TIMEOUT,
        )
        if not listed.workspaces:
            raise ChatError("this account has no workspace")
        created = await stub.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                parent=listed.workspaces[0].name,
                conversation=conversation_pb2.Conversation(
                    title="cortex-core chat", tools=tools or []
                ),
            ),
            timeout=CALL_TIMEOUT,
        )
        self.conversation = str(created.conversation.name)
        return self.conversation

    def _print(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def _note(self, text: str) -> None:
        self._print(f"\x1b[2m{text}\x1b[0m\n" if self._dim else f"{text}\n")

    def approvals(self, line: str) -> list[conversation_service_pb2.ToolApproval] | None:
        """The decisions a ``/approve ID`` or ``/deny ID`` line makes, or None."""
        verb, _, rest = line.partition(" ")
        decision = {
            "/approve": conversation_service_pb2.TOOL_APPROVAL_DECISION_APPROVE,
            "/deny": conversation_service_pb2.TOOL_APPROVAL_DECISION_DENY,
        }.get(verb)
        if decision is None:
            return None
        ids = rest.split() or self.pending
        return [
            conversation_service_pb2.ToolApproval(tool_call_id=i, decision=decision) for i in ids
        ]

    async def send(
        self, content: str, approvals: list[conversation_service_pb2.ToolApproval] | None = None
    ) -> None:
        """Stream one reply; cancelling this coroutine cancels the call."""
        stub = conversation_service_pb2_grpc.ConversationServiceStub(self._chan)
        call = stub.SendMessage(
            conversation_service_pb2.SendMessageRequest(
                conversation=self.conversation,
                content="" if approvals else content,
                idempotency_key=uuid.uuid4().hex,
                approvals=approvals or [],
            ),
            timeout=REPLY_TIMEOUT,
        )
        usage = "usage not reported"
        at_line_start = True
        try:
            async for frame in call:
                kind = frame.WhichOneof("frame")
                if kind == "delta" and frame.delta.text:
                    self._print(frame.delta.text)
                    at_line_start = frame.delta.text.endswith("\n")
                elif kind in ("tool_call", "tool_result"):
                    if not at_line_start:
                        self._print("\n")
                        at_line_start = True
                    self._note(_tool_line(frame))
                elif kind == "usage":
                    usage = (
                        f"{frame.usage.prompt_tokens} prompt + "
                        f"{frame.usage.completion_tokens} completion tokens"
                    )
                elif kind == "completion":
                    if not at_line_start:
                        self._print("\n")
                        at_line_start = True
                    done = frame.completion
                    finish = message_pb2.FinishReason.Name(done.finish_reason)
                    parts = [
                        finish.removeprefix("FINISH_REASON_").lower(),
                        f"{done.provider}/{done.model}",
                        usage,
                    ]
                    if done.HasField("error"):
                        code = _CODE_NAMES.get(done.error.code, str(done.error.code))
                        reason = status_reason(done.error)
                        parts.append(f"{code} ({reason}): {done.error.message}")
                    self._note("[" + " · ".join(parts) + "]")
                    self.pending = [
                        c.id
                        for c in done.message.tool_calls
                        if c.state == message_pb2.TOOL_CALL_STATE_PENDING_APPROVAL
                    ]
                    if self.pending:
                        ids = " ".join(self.pending)
                        self._note(f"[waiting for approval: /approve {ids} · /deny {ids}]")
        except asyncio.CancelledError:
            call.cancel()
            if not at_line_start:
                self._print("\n")
            self._note("[cancelled · the partial reply is stored]")
            raise


def _tool_line(frame: Any) -> str:
    if frame.WhichOneof("frame") == "tool_call":
        call = frame.tool_call
        arguments = json_format.MessageToJson(call.arguments, indent=None)
        state = message_pb2.ToolCallState.Name(call.state).removeprefix("TOOL_CALL_STATE_")
        return f"[tool call {call.id}: {call.tool} {arguments} · {state.lower()}]"
    result = frame.tool_result
    if result.HasField("error"):
        outcome = f"{status_reason(result.error)}: {result.error.message}"
    else:
        outcome = json_format.MessageToJson(result.output, indent=None)
    return f"[tool result {result.tool_call_id}: {outcome}]"


def _ask(prompt: str) -> str:
    try:
        if sys.stdin.isatty():
            return input(prompt).strip()
        print(prompt, end="", file=sys.stderr, flush=True)  # keep stdout for the replies
        return input().strip()
    except EOFError:
        raise ChatError(f"no input for {prompt.strip(': ')}") from None


def run(args: argparse.Namespace) -> int:
    """The ``chat`` command; returns the exit code."""
    out, err = sys.stdout, sys.stderr
    address = args.address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())
    chat = Chat(address, out)
    with asyncio.Runner() as runner:
        try:
            runner.run(chat.check_reachable())
            email = args.email or _ask("email: ")
            password = os.environ.get(PASSWORD_ENV) or getpass.getpass("password: ")
            display_name = None
            if args.register:
                display_name = args.display_name or _ask("display name: ")
            runner.run(chat.sign_in(email, password, display_name))
            name = runner.run(chat.open(args.conversation, args.tool))
            print(f"conversation {name} (/quit or end of input to leave)", file=err)
            while True:
                try:
                    line = input("you> " if interactive else "")
                except EOFError:
                    return 0
                content = line.strip()
                if content == "/quit":
                    return 0
                if not content:
                    continue
                try:
                    runner.run(chat.send(content, chat.approvals(content)))
                except KeyboardInterrupt:
                    continue
                except (grpc.RpcError, CortexError) as error:
                    print(f"error: {describe(error)}", file=err)
        except KeyboardInterrupt:
            print(file=err)
            return 130
        except (grpc.RpcError, CortexError) as error:
            print(f"error: {describe(error)}", file=err)
            return 1
        except ChatError as error:
            print(f"error: {error}", file=err)
            return 1
        finally:
            runner.run(chat.close())
