"""One replica called directly against the cluster called through Envoy.

Starts ``cortex-core cluster`` (2 replicas behind Envoy, every port free) on
PostgreSQL and Redis, signs one user up, then alternates rounds of an
authenticated ``GetCurrentUser`` (token check, session lookup) sent straight to
replica 1 and sent to Envoy's listener, which spreads them over both replicas.
The ratio says what the proxy hop costs a caller and what a second replica
gives on this machine; server CPU per call sums every replica's CPU.

    python -m bench.cluster [--duration 5] [--concurrency 32] [--rounds 2]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/cortex_bench_cluster]
        [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from bench.load import HEADER, Result, process_cpu_seconds, run_load

_REPLICA = re.compile(r"replica \d+ pid (\d+) serving on (\S+),")
_ENVOY = re.compile(r"gRPC and gRPC-Web on (\S+),")
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def cluster(
    directory: Path, database_url: str, redis_url: str
) -> Iterator[tuple[list[tuple[int, str]], str]]:
    """([(pid, address)] of the replicas, Envoy's listener) of a running cluster."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")},
        "CORTEX_ACCESS_LOG": "false",
        "CORTEX_RATE_USER": "100000000/minute",
    }
    command = [
        str(Path(sys.executable).with_name("cortex-core")), "cluster", "--replicas", "2",
        "--base-port", "0", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
        "--directory", str(directory), "--envoy-template", str(REPO / "envoy" / "envoy.yaml"),
        "--database-url", database_url, "--redis-url", redis_url,
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        replicas: list[tuple[int, str]] = []
        listener = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if found := _REPLICA.search(line):
                replicas.append((int(found[1]), found[2]))
            if found := _ENVOY.search(line):
                listener = found[1]
            if "ready:" in line:
                break
        else:
            raise RuntimeError("the cluster exited before it was ready")
        yield replicas, listener
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


async def sign_up(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(
            auth_service_pb2.RegisterRequest(
                email=f"bench-{uuid.uuid4().hex[:10]}@example.com",
                password="correct horse battery staple 42",
                display_name="Bench",
            ),
            timeout=30,
        )
    return str(response.access_token)


async def measure(
    label: str, address: str, token: str, pids: list[int], concurrency: int, duration: float
) -> Result:
    metadata = (("authorization", f"Bearer {token}"),)

    async def current_user(channel: grpc.aio.Channel) -> object:
        stub = auth_service_pb2_grpc.AuthServiceStub(channel)
        return await stub.GetCurrentUser(
            auth_service_pb2.GetCurrentUserRequest(), metadata=metadata, timeout=10
        )

    before = sum(process_cpu_seconds(pid) for pid in pids)
    result = await run_load(
        label, address, current_user, concurrency=concurrency, duration=duration
    )
    spent = sum(process_cpu_seconds(pid) for pid in pids) - before
    # run_load's warm-up calls are in ``spent`` too; per call it is a slight overestimate.
    return Result(
        result.label,
        result.calls,
        result.seconds,
        result.p50_ms,
        result.p99_ms,
        result.errors,
        server_cpu_us=spent / max(result.calls, 1) * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--database-url",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/cortex_bench_cluster",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    direct: list[Result] = []
    proxied: list[Result] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        cluster(Path(tmp), args.database_url, args.redis_url) as (replicas, listener),
    ):
        token = uvloop.run(sign_up(listener))
        pids = [pid for pid, _ in replicas]
        for round_no in range(args.rounds):
            for label, address, results in (
                ("direct, 1 replica", replicas[0][1], direct),
                ("Envoy, 2 replicas", listener, proxied),
            ):
                results.append(
                    uvloop.run(
                        measure(
                            f"{label} (round {round_no + 1})",
                            address,
                            token,
                            pids,
                            args.concurrency,
                            args.duration,
                        )
                    )
                )
    print(
        f"Authenticated unary RPC (GetCurrentUser), closed loop, {args.concurrency} in flight, "
        f"{args.duration:g} s per round"
    )
    print(HEADER)
    for result in [*direct, *proxied]:
        print(result.row())
    best_direct = max(direct, key=lambda r: r.rps)
    best_proxied = max(proxied, key=lambda r: r.rps)
    print(
        f"ratio via Envoy/direct: throughput {best_proxied.rps / best_direct.rps:.2f}x, "
        f"p50 {best_proxied.p50_ms / best_direct.p50_ms:.2f}x, "
        f"p99 {best_proxied.p99_ms / best_direct.p99_ms:.2f}x (best round of each)"
    )


if __name__ == "__main__":
    main()
