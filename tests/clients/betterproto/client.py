"""Proves the generated betterproto stubs make a real gRPC round trip.

Calls ``cortex.experts.v1.ExpertService/ListExperts`` through the betterproto
``ExpertServiceStub`` on a grpclib channel and prints ``status=<CODE_NAME>``.

Usage: PYTHONPATH=generated/betterproto python tests/clients/betterproto/client.py HOST:PORT

Exit status: 0 when the server answered (any status), 1 on usage errors,
2 when no round trip happened (connection refused, timeout).
"""

from __future__ import annotations

import asyncio
import sys

from cortex_betterproto.cortex.experts.v1 import ExpertServiceStub, ListExpertsRequest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError


async def list_experts(host: str, port: int) -> str:
    """Returns the canonical name of the status ListExperts ended with."""
    channel = Channel(host, port)
    try:
        stub = ExpertServiceStub(channel)
        try:
            await stub.list_experts(ListExpertsRequest(page_size=10), timeout=10)
        except GRPCError as error:
            return error.status.name
        return Status.OK.name
    finally:
        channel.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or ":" not in argv[1]:
        print("usage: client.py HOST:PORT", file=sys.stderr)
        return 1
    host, _, port = argv[1].rpartition(":")
    try:
        name = asyncio.run(list_experts(host, int(port)))
    except (TimeoutError, OSError) as error:
        print(f"no round trip: {error!r}", file=sys.stderr)
        return 2
    print(f"status={name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
