"""Fire ``bursts`` rounds of 20 concurrent logins at a server (used by bench.auth)."""

from __future__ import annotations

import asyncio
import sys

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc


async def main(address: str, email: str, password: str, bursts: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        request = auth_service_pb2.LoginRequest(email=email, password=password)
        for _ in range(bursts):
            await asyncio.gather(*(stub.Login(request, timeout=60) for _ in range(20)))


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
