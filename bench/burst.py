"""A burst of replies, each watched: 1,000 ``SendMessage`` calls at once, each to
its own conversation, each conversation followed by a ``SubscribeEvents``
listener filtered to it.

Cortex runs as ``cortex-core serve`` in its own process with its default
configuration (the local development provider, pacing its words by
``--word-delay``; SQLite, or the database in ``--database-url``); this process
is the client, over ``--channels`` connections.

1. Set-up (not timed): one user, ``--sends`` conversations in its workspace, and
   one listener per conversation, each open once its first heartbeat arrived.
2. The burst (timed): every send at once. A send refused up front with
   RESOURCE_EXHAUSTED and a RetryInfo (the admission limit,
   ``CORTEX_MAX_ACTIVE_REPLIES``) waits the delay it was told and tries again,
   as a well-behaved client does; it is counted as refused, not as an error.
3. Reported: the time until every send finished; sends that completed, were
   refused first, or failed (by status code and reason); listeners that saw
   their reply complete (and when the last of them did), were cut (by code and
   reason), or had not heard it ``--grace`` seconds after the last send ended.

Target (issue 10): the burst done in ≤ 10 s with 0 errors on SQLite and on
PostgreSQL.

    python -m bench.burst [--sends 1000] [--database-url URL] [--channels 10]
                          [--word-delay 0.01] [--timeout 120] [--grace 30] [--data-dir DIR]
                          [--max-active-replies N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.context.v1 import conversation_pb2, conversation_service_pb2
from cortex.context.v1 import conversation_service_pb2_grpc as conversation_grpc
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.servers import cortex_server

# One connection per channel (grpc shares subchannels between equal channels otherwise).
_CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
HEARTBEAT = 1.0  # CORTEX_EVENTS_HEARTBEAT: a listener counts as open at its first one


@dataclasses.dataclass
class Outcome:
    sends_ok: int = 0
    refused: int = 0  # RESOURCE_EXHAUSTED + RetryInfo, then retried
    send_errors: Counter[str] = dataclasses.field(default_factory=Counter)
    heard: int = 0
    cut: Counter[str] = dataclasses.field(default_factory=Counter)
    silent: int = 0
    wall: float = 0.0  # burst start to the last send's end
    last_heard: float = 0.0  # time.perf_counter() when the last listener heard its completion
    finished: bool = True


@contextlib.contextmanager
def cortex(args: argparse.Namespace) -> Iterator[str]:
    """``cortex-core serve`` in its own process; its log is ``<data dir>/server.log``."""
    env = {
        "CORTEX_EVENTS_HEARTBEAT": str(HEARTBEAT),
        "CORTEX_LOCAL_LLM_DELAY": str(args.word_delay),
    }
    if args.database_url:
        env["CORTEX_DATABASE_URL"] = args.database_url
    if args.max_active_replies:
        env["CORTEX_MAX_ACTIVE_REPLIES"] = str(args.max_active_replies)
    with contextlib.ExitStack() as stack:
        directory = args.data_dir or stack.enter_context(tempfile.TemporaryDirectory())
        yield stack.enter_context(cortex_server(Path(directory), env)).address


def _reason_and_delay(error: grpc.aio.AioRpcError) -> tuple[str, float | None]:
    """The ErrorInfo reason and the RetryInfo delay (seconds) of a failed call."""
    reason, delay = "", None
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                delay = retry.retry_delay.ToTimedelta().total_seconds()
    return reason, delay


def _label(error: grpc.aio.AioRpcError) -> str:
    reason, _ = _reason_and_delay(error)
    return f"{error.code().name} {reason}".strip()


async def _send(stub: Any, metadata: Any, conversation: str, outcome: Outcome) -> None:
    request = conversation_service_pb2.SendMessageRequest(
        conversation=conversation, content="a burst of questions", idempotency_key="burst"
    )
    while True:
        try:
            async for frame in stub.SendMessage(request, metadata=metadata):
                if frame.WhichOneof("frame") == "completion":
                    outcome.sends_ok += 1
            return
        except grpc.aio.AioRpcError as error:
            _, delay = _reason_and_delay(error)
            if error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None:
                outcome.refused += 1
                await asyncio.sleep(delay)
                continue
            outcome.send_errors[_label(error)] += 1
            return


async def _listen(call: Any, opened: asyncio.Event, outcome: Outcome) -> None:
    try:
        async for frame in call:
            kind = frame.WhichOneof("frame")
            if kind == "heartbeat":
                opened.set()
            elif kind == "event" and frame.event.WhichOneof("payload") == "reply_completed":
                outcome.heard += 1
                outcome.last_heard = time.perf_counter()
                return
        outcome.cut["OK (ended without the completion)"] += 1
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.CANCELLED:
            outcome.cut[_label(error)] += 1
    finally:
        opened.set()


async def burst(
    address: str, sends: int, channel_count: int, limit: float, grace: float
) -> Outcome:
    outcome = Outcome()
    channels = [
        grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) for _ in range(channel_count)
    ]
    listeners: list[asyncio.Task[None]] = []
    try:
        account = await auth_service_pb2_grpc.AuthServiceStub(channels[0]).Register(
            auth_service_pb2.RegisterRequest(
                email=f"burst-{uuid.uuid4().hex[:8]}@example.com",
                password="correct horse battery staple 42",
                display_name="Burst",
            ),
            timeout=30,
        )
        metadata = (("authorization", f"Bearer {account.access_token}"),)
        workspace = (
            (
                await workspace_service_pb2_grpc.WorkspaceServiceStub(channels[0]).ListWorkspaces(
                    workspace_service_pb2.ListWorkspacesRequest(), metadata=metadata
                )
            )
            .workspaces[0]
            .name
        )
        stubs = [conversation_grpc.ConversationServiceStub(c) for c in channels]
        conversations: list[str] = []
        for start in range(0, sends, 50):
            created = await asyncio.gather(
                *(
                    stubs[n % channel_count].CreateConversation(
                        conversation_service_pb2.CreateConversationRequest(
                            parent=workspace,
                            conversation=conversation_pb2.Conversation(title=f"burst {n}"),
                        ),
                        metadata=metadata,
                        timeout=30,
                    )
                    for n in range(start, min(start + 50, sends))
                )
            )
            conversations.extend(c.conversation.name for c in created)

        events = [event_service_pb2_grpc.EventServiceStub(c) for c in channels]
        opened = [asyncio.Event() for _ in conversations]
        for n, conversation in enumerate(conversations):
            call = events[n % channel_count].SubscribeEvents(
                event_service_pb2.SubscribeEventsRequest(conversation=conversation),
                metadata=metadata,
            )
            listeners.append(asyncio.create_task(_listen(call, opened[n], outcome)))
        async with asyncio.timeout(60):
            await asyncio.gather(*(o.wait() for o in opened))
        if outcome.cut:
            raise RuntimeError(f"listeners failed to open: {dict(outcome.cut)}")

        begin = time.perf_counter()
        try:
            async with asyncio.timeout(limit):
                await asyncio.gather(
                    *(
                        _send(stubs[n % channel_count], metadata, conversation, outcome)
                        for n, conversation in enumerate(conversations)
                    )
                )
        except TimeoutError:
            outcome.finished = False
        outcome.wall = time.perf_counter() - begin
        # Listeners may still be catching up: give them ``grace`` seconds more.
        _, pending = await asyncio.wait(listeners, timeout=grace)
        outcome.silent = len(pending)
        outcome.last_heard = max(outcome.last_heard - begin, 0.0)
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        for channel in channels:
            await channel.close()
    return outcome


def report(label: str, sends: int, grace: float, outcome: Outcome) -> None:
    errors = sum(outcome.send_errors.values())
    wall = f"{outcome.wall:.2f} s" + ("" if outcome.finished else " (timed out)")
    print(f"  {label}: {wall} for {sends} sends (target <= 10 s, 0 errors)")
    print(
        f"    sends: {outcome.sends_ok} completed, {errors} errors,"
        f" {outcome.refused} refusals (RESOURCE_EXHAUSTED + RetryInfo, retried)"
    )
    for code, count in outcome.send_errors.most_common():
        print(f"      {count} x {code}")
    cut = sum(outcome.cut.values())
    print(
        f"    listeners: {outcome.heard} heard their reply complete (the last"
        f" {outcome.last_heard:.2f} s after the burst began), {cut} cut,"
        f" {outcome.silent} had not heard it {grace:.0f} s after the last send ended"
    )
    for code, count in outcome.cut.most_common():
        print(f"      {count} x {code}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--database-url", default="", help="PostgreSQL URL (default SQLite)")
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--word-delay", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds listeners get after the last send"
    )
    parser.add_argument("--data-dir", default="", help="keep the server's data and log here")
    parser.add_argument(
        "--max-active-replies",
        type=int,
        default=0,
        help="CORTEX_MAX_ACTIVE_REPLIES (default: unset)",
    )
    args = parser.parse_args()

    backend = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"Burst: {args.sends} SendMessage at once, one conversation each, each watched by a"
        f" conversation-filtered SubscribeEvents ({backend}, local provider,"
        f" {args.word_delay * 1000:.0f} ms/word)"
    )
    with cortex(args) as address:
        outcome = uvloop.run(burst(address, args.sends, args.channels, args.timeout, args.grace))
    report(backend, args.sends, args.grace, outcome)


if __name__ == "__main__":
    main()
