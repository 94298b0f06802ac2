"""Bare grpc.aio against Cortex's full stack on a cheap unary RPC.

Both servers run as separate processes on uvloop and answer
``grpc.health.v1.Health/Check``; Cortex's call passes its whole interceptor
stack (request id, error mapping, JSON access log). The load generator runs in
this process. Rounds alternate bare/cortex so machine noise hits both.

    python -m bench.unary [--duration 5] [--concurrency 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc.aio
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.load import HEADER, Result, run_load

_READY = re.compile(r"serving on (\S+:\d+)")


@contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield _ready(proc), proc.pid
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


@contextmanager
def cortex_server(
    data_dir: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    env = {
        **os.environ,
        "CORTEX_GRPC_ADDRESS": "127.0.0.1:0",
        "CORTEX_DATA_DIR": str(data_dir),
        **(extra_env or {}),
    }
    with (data_dir / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("cortex-core")), "serve"],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
        try:
            yield _ready(proc), proc.pid
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def _ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        match = _READY.search(line)
        if match:
            return match.group(1)
    raise RuntimeError("server exited before it was ready")


async def health_check(channel: grpc.aio.Channel) -> object:
    stub = health_pb2_grpc.HealthStub(channel)
    return await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    bare: list[Result] = []
    cortex: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            with bare_server() as (address, pid):
                bare.append(
                    uvloop.run(
                        run_load(
                            f"bare grpc.aio (round {round_no + 1})",
                            address,
                            health_check,
                            concurrency=args.concurrency,
                            duration=args.duration,
                            server_pid=pid,
                        )
                    )
                )
            with cortex_server(Path(tmp)) as (address, pid):
                cortex.append(
                    uvloop.run(
                        run_load(
                            f"cortex full stack (round {round_no + 1})",
                            address,
                            health_check,
                            concurrency=args.concurrency,
                            duration=args.duration,
                            server_pid=pid,
                        )
                    )
                )
    print("Cheap unary RPC (grpc.health.v1.Health/Check), closed loop,", end=" ")
    print(f"{args.concurrency} in flight, {args.duration:.0f} s per round")
    print(HEADER)
    for result in [*bare, *cortex]:
        print(result.row())
    print_ratios(bare, cortex)


def print_ratios(bare: list[Result], cortex: list[Result]) -> None:
    """Ratios of the best round of each; CPU per call is the least noisy figure."""
    best_bare = max(bare, key=lambda r: r.rps)
    best_cortex = max(cortex, key=lambda r: r.rps)
    cpu_bare = min(r.server_cpu_us for r in bare)
    cpu_cortex = min(r.server_cpu_us for r in cortex)
    print(
        f"ratio cortex/bare: throughput {best_cortex.rps / best_bare.rps:.2f}x, "
        f"p50 {best_cortex.p50_ms / best_bare.p50_ms:.2f}x, "
        f"p99 {best_cortex.p99_ms / best_bare.p99_ms:.2f}x (best round of each)"
    )
    print(
        f"server CPU per call: bare {cpu_bare:.0f} µs, cortex {cpu_cortex:.0f} µs; "
        f"capacity ratio (bare CPU / cortex CPU) {cpu_bare / cpu_cortex:.2f}x"
    )


if __name__ == "__main__":
    main()
