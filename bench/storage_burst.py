"""A burst of SendMessage calls against a real ``cortex-core serve``: how storage holds.

N conversations are created first; then N SendMessage calls start at once, each
to its own conversation, and each is read to its end. Reported per backend:
wall time of the burst, how many replies completed, and every failure by code
and ErrorInfo reason (INTERNAL must stay 0: pool and lock waits are
UNAVAILABLE/DATABASE_BUSY, admission refusals RESOURCE_EXHAUSTED).

The server is its own process (local development provider, access log off),
so client and server do not share an event loop.

    python -m bench.storage_burst [--sends 1000] [--backend sqlite|postgresql|both]
        (postgresql uses a throw-away database on CORTEX_TEST_DATABASE_URL)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

import grpc.aio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cortex.context.v1 import conversation_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from support.clients import Client, authenticated_channel
from support.databases import postgres_database
from support.rpc import details
from support.servers import cortex_server

CHANNELS = 8


async def burst(address: str, sends: int) -> tuple[float, collections.Counter[str]]:
    client = Client(address)
    account = await client.register()
    workspace = (await client.first_workspace(account)).name
    channels = [authenticated_channel(address, account.access_token) for _ in range(CHANNELS)]
    stubs = [cgrpc.ConversationServiceStub(c) for c in channels]
    names: list[str] = []
    for start in range(0, sends, 100):
        created = await asyncio.gather(
            *(
                stubs[n % CHANNELS].CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title="b")
                    ),
                    timeout=60,
                )
                for n in range(start, min(sends, start + 100))
            )
        )
        names.extend(c.conversation.name for c in created)
    outcomes: collections.Counter[str] = collections.Counter()

    async def send(n: int) -> None:
        request = cpb.SendMessageRequest(conversation=names[n], content="hello there")
        try:
            async for _ in stubs[n % CHANNELS].SendMessage(request, timeout=120):
                pass
            outcomes["OK"] += 1
        except grpc.aio.AioRpcError as error:
            info = details(error).get("ErrorInfo")
            outcomes[f"{error.code().name}/{info.reason if info else '-'}"] += 1

    started = time.monotonic()
    await asyncio.gather(*(send(n) for n in range(sends)))
    wall = time.monotonic() - started
    for channel in channels:
        await channel.close()
    await client.close()
    return wall, outcomes


def run(backend: str, sends: int) -> None:
    async def with_url() -> tuple[float, collections.Counter[str]]:
        env = {"CORTEX_ACCESS_LOG": "false"}
        if backend == "postgresql":
            async with postgres_database() as url:
                env["CORTEX_DATABASE_URL"] = url
                return await asyncio.to_thread(serve_and_burst, env)
        return await asyncio.to_thread(serve_and_burst, env)

    def serve_and_burst(env: dict[str, str]) -> tuple[float, collections.Counter[str]]:
        with tempfile.TemporaryDirectory() as tmp, cortex_server(Path(tmp), env) as server:
            return asyncio.run(burst(server.address, sends))

    wall, outcomes = asyncio.run(with_url())
    print(f"{backend:<11} {sends:>6} sends  {wall:>7.1f} s  {dict(outcomes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        run(backend, args.sends)


if __name__ == "__main__":
    main()
