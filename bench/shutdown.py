"""Shutdown and reconnect-burst figures for ``cortex-core serve``.

``python -m bench.shutdown`` (run it on two checkouts to compare them):

1. SIGTERM with everything in flight: ``--unary`` Register calls (each waits on the
   password hasher's pool), ``--replies`` replies paced by ``CORTEX_LOCAL_LLM_DELAY``
   and ``--events`` event streams, with ``CORTEX_SHUTDOWN_GRACE`` = ``--grace``.
   Reports how each call ended (by code; for event streams whether the status carried
   ErrorInfo, RetryInfo and a resume token), how soon the event streams heard, how
   long the process took to exit against the grace, and how many "different Context"
   errors it logged.
2. ``--cheap`` GetCurrentUser calls sent at once on 4 connections, SIGTERM 50 ms
   later (most still wait in grpc's queue): how each ended.
3. A reconnect burst: ``--burst`` SubscribeEvents opened at once on default settings.
   Reports how many opened and how many were refused, with and without ErrorInfo and
   RetryInfo.

These are correctness figures under load, not speed ratios: the only timing is the
exit time, read against the configured grace.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.context.v1 import conversation_pb2, conversation_service_pb2
from cortex.context.v1 import conversation_service_pb2_grpc as conversation_grpc
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from bench.events import _ready, _stop

_CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)
_MESSAGE = " ".join(f"word{i}" for i in range(40))


@contextlib.contextmanager
def server(env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        full = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")},
            "CORTEX_GRPC_ADDRESS": "127.0.0.1:0",
            "CORTEX_DATA_DIR": tmp,
            "CORTEX_ACCESS_LOG": "false",
            **env,
        }
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("cortex-core")), "serve"],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=full,
            )
            try:
                yield proc, _ready(proc), log_path
            finally:
                if proc.poll() is None:
                    _stop(proc, signal.SIGTERM)


async def register(channel: grpc.aio.Channel) -> tuple[str, list[tuple[str, str]]]:
    """A new account: its personal workspace and its call metadata."""
    response = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(
        auth_service_pb2.RegisterRequest(
            email=f"bench-{uuid.uuid4().hex[:10]}@example.com",
            password="correct horse battery staple 42",
            display_name="Bench",
        ),
        timeout=60,
    )
    metadata = [("authorization", f"Bearer {response.access_token}")]
    listed = await workspace_service_pb2_grpc.WorkspaceServiceStub(channel).ListWorkspaces(
        workspace_service_pb2.ListWorkspacesRequest(), metadata=metadata, timeout=30
    )
    return str(listed.workspaces[0].name), metadata


def describe(error: grpc.aio.AioRpcError) -> str:
    """``CODE`` plus which details the status carried."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    kinds = []
    for detail in status.details if status is not None else ():
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                name = kind.__name__
                if isinstance(message, error_details_pb2.ErrorInfo):
                    name += f"({message.reason})"
                kinds.append(name)
    if any(k == "cortex-resume-token" and v for k, v in error.trailing_metadata() or ()):
        kinds.append("resume-token")
    return f"{error.code().name} {'+'.join(kinds) or 'bare'}"


async def _ended(call: Any) -> str:
    try:
        result = await call
    except grpc.aio.AioRpcError as error:
        return describe(error)
    return "OK" if result is not None else "?"


async def _stream_end(stream: Any, started: list[float], heard: list[float]) -> str:
    last = None
    try:
        while (frame := await stream.read()) is not grpc.aio.EOF:
            last = frame
    except grpc.aio.AioRpcError as error:
        heard.append(time.monotonic() - started[0])
        return describe(error)
    kind = last.WhichOneof("frame") if last is not None else "nothing"
    return f"OK, last frame {kind}"


async def sigterm(unary: int, replies: int, events: int, grace: float) -> None:
    env = {
        "CORTEX_SHUTDOWN_GRACE": str(grace),
        "CORTEX_LOCAL_LLM_DELAY": "0.05",
        "CORTEX_EVENTS_HEARTBEAT": "1",
        "CORTEX_REGISTER_ADDRESS_ATTEMPTS": str(unary + 100),  # all from one address
    }
    with server(env) as (proc, address, log_path):
        async with grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) as channel:
            workspace, metadata = await register(channel)
            conversations = conversation_grpc.ConversationServiceStub(channel)
            names = []
            for _ in range(replies):
                created = await conversations.CreateConversation(
                    conversation_service_pb2.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title="b")
                    ),
                    metadata=metadata,
                    timeout=30,
                )
                names.append(created.conversation.name)
            subscriber = event_service_pb2_grpc.EventServiceStub(channel)
            streams = [
                subscriber.SubscribeEvents(
                    event_service_pb2.SubscribeEventsRequest(), metadata=metadata
                )
                for _ in range(events)
            ]
            for stream in streams:
                await stream.read()
            sends = [
                conversations.SendMessage(
                    conversation_service_pb2.SendMessageRequest(conversation=n, content=_MESSAGE),
                    metadata=metadata,
                )
                for n in names
            ]
            for send in sends:
                await send.read()
                await send.read()  # the first delta: the reply is generating
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)
            calls = [
                auth.Register(
                    auth_service_pb2.RegisterRequest(
                        email=f"bench-{uuid.uuid4().hex[:10]}@example.com",
                        password="correct horse battery staple 42",
                        display_name="Bench",
                    ),
                    timeout=grace + 30,
                )
                for _ in range(unary)
            ]
            await asyncio.sleep(0.3)
            started = [time.monotonic()]
            heard: list[float] = []  # event streams: seconds from SIGTERM to their status
            proc.send_signal(signal.SIGTERM)
            outcomes = await asyncio.gather(
                asyncio.gather(*(_ended(c) for c in calls)),
                asyncio.gather(*(_stream_end(s, started, []) for s in sends)),
                asyncio.gather(*(_stream_end(s, started, heard) for s in streams)),
                asyncio.to_thread(proc.wait, grace + 60),
            )
            exited = time.monotonic() - started[0]
        logs = log_path.read_text()
    unary_ends, reply_ends, event_ends, code = outcomes
    print(f"SIGTERM: grace {grace:g} s, exit code {code}, exited after {exited:.2f} s")
    for label, ends in (("unary", unary_ends), ("replies", reply_ends), ("events", event_ends)):
        print(f"  {label:8} {dict(collections.Counter(ends))}")
    if heard:
        print(f"  event streams: the last one heard {max(heard):.2f} s after SIGTERM")
    print(f"  'different Context' errors logged: {logs.count('different Context')}")


async def cheap_calls(count: int) -> None:
    with server({"CORTEX_SHUTDOWN_GRACE": "30"}) as (proc, address, _log):
        opened = [grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) for _ in range(4)]
        try:
            _, metadata = await register(opened[0])
            stubs = [auth_service_pb2_grpc.AuthServiceStub(c) for c in opened]
            request = auth_service_pb2.GetCurrentUserRequest()
            calls = [
                stubs[i % 4].GetCurrentUser(request, metadata=metadata, timeout=60)
                for i in range(count)
            ]
            await asyncio.sleep(0.05)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            ends = await asyncio.gather(*(_ended(c) for c in calls))
            code = await asyncio.to_thread(proc.wait, 90)
            exited = time.monotonic() - started
        finally:
            for channel in opened:
                await channel.close()
    print(f"{count} GetCurrentUser then SIGTERM: exit code {code} after {exited:.2f} s")
    print(f"  {dict(collections.Counter(ends))}")


async def burst(count: int, channels: int) -> None:
    with server({"CORTEX_EVENTS_HEARTBEAT": "1"}) as (_, address, _log):
        opened = [
            grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS) for _ in range(channels)
        ]
        try:
            _, metadata = await register(opened[0])
            streams = [
                event_service_pb2_grpc.EventServiceStub(opened[i % channels]).SubscribeEvents(
                    event_service_pb2.SubscribeEventsRequest(), metadata=metadata
                )
                for i in range(count)
            ]

            async def first(stream: Any) -> str:
                try:
                    async with asyncio.timeout(120):
                        await stream.read()
                except grpc.aio.AioRpcError as error:
                    return describe(error)
                except TimeoutError:
                    return "no frame in 120 s"
                return "opened"

            ends = await asyncio.gather(*(first(s) for s in streams))
            for stream in streams:
                stream.cancel()
        finally:
            for channel in opened:
                await channel.close()
    print(f"burst of {count} SubscribeEvents on {channels} connections:")
    print(f"  {dict(collections.Counter(ends))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--unary", type=int, default=60)
    parser.add_argument("--replies", type=int, default=8)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--cheap", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(sigterm(args.unary, args.replies, args.events, args.grace))
    asyncio.run(cheap_calls(args.cheap))
    asyncio.run(burst(args.burst, args.connections))


if __name__ == "__main__":
    main()
