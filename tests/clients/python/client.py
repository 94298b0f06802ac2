"""Proves the generated grpcio stubs make a real gRPC round trip.

Calls ``cortex.experts.v1.ExpertService/ListExperts`` through
``expert_service_pb2_grpc.ExpertServiceStub`` on a ``grpc.aio`` channel and
prints ``status=<CODE_NAME>``.

Usage: PYTHONPATH=generated/python python tests/clients/python/client.py HOST:PORT
(the project venv already has generated/python on its path).

Exit status: 0 when the server answered (any status), 1 on usage errors,
2 when no round trip happened (connection refused, timeout).
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from cortex.experts.v1 import expert_service_pb2, expert_service_pb2_grpc


async def list_experts(address: str) -> grpc.StatusCode:
    """Returns the status code ListExperts ended with."""
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        stub = expert_service_pb2_grpc.ExpertServiceStub(channel)
        try:
            await stub.ListExperts(expert_service_pb2.ListExpertsRequest(page_size=10), timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: client.py HOST:PORT", file=sys.stderr)
        return 1
    try:
        code = asyncio.run(list_experts(argv[1]))
    except TimeoutError:
        print(f"no round trip: {argv[1]} not ready within 10s", file=sys.stderr)
        return 2
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        print("no round trip: deadline exceeded", file=sys.stderr)
        return 2
    print(f"status={code.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
