"""Identity costs, each against a baseline measured in the same run.

1. An authenticated cheap RPC (``AuthService/GetCurrentUser`` with a bearer
   token, through auth, error mapping and the access log) against the same RPC
   on a bare grpc.aio server: RPC/s, p50/p99, server CPU per call, ratio.
2. Login throughput: concurrent ``Login`` calls (argon2id per call).
3. Event-loop lag while 20 logins hash at once: a ticker in the server's own
   loop measures how late a 5 ms sleep wakes up, during bursts of 20
   concurrent logins sent from another process.

    python -m bench.auth [--duration 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from bench.load import HEADER, Result, percentile, run_load
from bench.unary import bare_server, cortex_server, print_ratios

PASSWORD = "correct horse battery staple 42"
#: Sign-in attempts are reserved before hashing, so more parallel logins to one account
#: than its free attempts (5) wait for the first to succeed. These benchmarks measure
#: hashing, not the throttle: they raise the account's allowance.
BENCH_ACCOUNT_ATTEMPTS = 1000


async def _register(address: str) -> tuple[str, str]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
        response = await stub.Register(
            auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, display_name="Bench"),
            timeout=30,
        )
        return email, response.access_token


def _current_user(token: str):  # type: ignore[no-untyped-def]
    metadata = (("authorization", f"Bearer {token}"),)
    request = auth_service_pb2.GetCurrentUserRequest()

    async def call(channel: grpc.aio.Channel) -> object:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return await stub.GetCurrentUser(request, metadata=metadata, timeout=5)

    return call


def _login(email: str):  # type: ignore[no-untyped-def]
    request = auth_service_pb2.LoginRequest(email=email, password=PASSWORD)

    async def call(channel: grpc.aio.Channel) -> object:
        return await auth_service_pb2_grpc.AuthServiceStub(channel).Login(request, timeout=60)

    return call


def authenticated_ratio(duration: float, rounds: int) -> None:
    bare: list[Result] = []
    cortex: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            with bare_server() as (address, pid):
                bare.append(
                    uvloop.run(
                        run_load(
                            f"bare grpc.aio (round {n + 1})",
                            address,
                            _current_user("unused"),
                            duration=duration,
                            server_pid=pid,
                        )
                    )
                )
            with cortex_server(Path(tmp)) as (address, pid):
                _, token = uvloop.run(_register(address))
                cortex.append(
                    uvloop.run(
                        run_load(
                            f"cortex authenticated ({n + 1})",
                            address,
                            _current_user(token),
                            duration=duration,
                            server_pid=pid,
                        )
                    )
                )
    print("\n1. Authenticated cheap RPC (AuthService/GetCurrentUser), 32 in flight")
    print(HEADER)
    for result in [*bare, *cortex]:
        print(result.row())
    print_ratios(bare, cortex)


def login_throughput(duration: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, cortex_server(Path(tmp)) as (address, pid):
        email, _ = uvloop.run(_register(address))
        result = uvloop.run(
            run_load(
                "cortex Login",
                address,
                _login(email),
                concurrency=8,
                warmup=1.0,
                duration=duration,
                server_pid=pid,
            )
        )
    print("\n2. Login throughput (argon2id verify per call), 8 in flight")
    print(HEADER)
    print(result.row())


async def _loop_lag(bursts: int) -> list[float]:
    """Run Cortex in this loop, fire bursts of 20 logins from a subprocess, sample lag."""
    from cortex_core.bootstrap import bootstrap
    from cortex_core.server import start
    from cortex_core.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            grpc_address="127.0.0.1:0",
            data_dir=Path(tmp),
            access_log=False,
            login_account_attempts=BENCH_ACCOUNT_ATTEMPTS,
        )
        running = await start(bootstrap(settings))
        try:
            email, _ = await _register(running.address)
            lags: list[float] = []
            done = asyncio.Event()

            async def ticker() -> None:
                while not done.is_set():
                    before = time.perf_counter()
                    await asyncio.sleep(0.005)
                    lags.append(time.perf_counter() - before - 0.005)

            tick = asyncio.create_task(ticker())
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.login_burst",
                running.address,
                email,
                PASSWORD,
                str(bursts),
            )
            await proc.wait()
            done.set()
            await tick
            return lags
        finally:
            await running.drain()


def loop_lag(bursts: int) -> None:
    lags = uvloop.run(_loop_lag(bursts))
    print(f"\n3. Event-loop lag in the server while 20 logins hash at once ({bursts} bursts)")
    print(
        f"   samples {len(lags)}, p50 {statistics.median(lags) * 1000:.2f} ms, "
        f"p99 {percentile(lags, 99) * 1000:.2f} ms, max {max(lags) * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bursts", type=int, default=5)
    args = parser.parse_args()
    os.environ["CORTEX_LOGIN_ACCOUNT_ATTEMPTS"] = str(BENCH_ACCOUNT_ATTEMPTS)  # for cortex_server
    authenticated_ratio(args.duration, args.rounds)
    login_throughput(args.duration)
    loop_lag(args.bursts)


if __name__ == "__main__":
    main()
