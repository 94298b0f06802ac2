"""The baseline: a bare grpc.aio server (uvloop, no interceptors, no auth).

It answers ``grpc.health.v1.Health/Check`` with SERVING and
``cortex.auth.v1.AuthService/GetCurrentUser`` with a constant user, the same
cheap RPCs Cortex serves, so the difference is Cortex's own per-call work."""

from __future__ import annotations

import asyncio
import sys

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc, user_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

USER = user_pb2.User(name="users/bench", email="bench@example.com", display_name="Bench")


class Health(health_pb2_grpc.HealthServicer):
    async def Check(self, request: health_pb2.HealthCheckRequest, context: object) -> object:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class Auth(auth_service_pb2_grpc.AuthServiceServicer):
    async def GetCurrentUser(self, request: object, context: object) -> object:
        return auth_service_pb2.GetCurrentUserResponse(user=USER)


async def main() -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(Auth(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(None)


if __name__ == "__main__":
    uvloop.run(main())
