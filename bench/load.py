"""A closed-loop load generator for unary gRPC calls.

``concurrency`` workers share a few channels and call back-to-back for
``duration`` seconds after a warm-up; the result has calls/s, latency
percentiles and, given the server's pid, the server CPU time spent per call —
the figure that stays meaningful when the Python client, not the server, is the
bottleneck. The generator runs in its own process so it does not share a core
with the server it measures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc.aio

Call = Callable[[grpc.aio.Channel], Awaitable[object]]


@dataclasses.dataclass(frozen=True)
class Result:
    label: str
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_us: float = float("nan")

    @property
    def rps(self) -> float:
        return self.calls / self.seconds

    def row(self) -> str:
        return (
            f"{self.label:<28} {self.rps:>10.0f} {self.p50_ms:>9.2f} {self.p99_ms:>9.2f}"
            f" {self.server_cpu_us:>12.0f} {self.errors:>7}"
        )


HEADER = (
    f"{'server':<28} {'RPC/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'server CPU µs':>12} {'errors':>7}"
)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def run_load(
    label: str,
    address: str,
    call: Call,
    *,
    concurrency: int = 32,
    channels: int = 2,
    warmup: float = 1.0,
    duration: float = 5.0,
    server_pid: int | None = None,
) -> Result:
    chans = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    try:
        for chan in chans:
            await asyncio.wait_for(chan.channel_ready(), 10)
        latencies: list[float] = []
        errors = 0
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def worker(chan: grpc.aio.Channel) -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    await call(chan)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    latencies.append(t1 - t0)

        async def cpu_window() -> float:
            if server_pid is None:
                return float("nan")
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            before = process_cpu_seconds(server_pid)
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            return process_cpu_seconds(server_pid) - before

        cpu, *_ = await asyncio.gather(
            cpu_window(), *(worker(chans[i % channels]) for i in range(concurrency))
        )
        return Result(
            label=label,
            calls=len(latencies),
            seconds=duration,
            p50_ms=percentile(latencies, 50) * 1000,
            p99_ms=percentile(latencies, 99) * 1000,
            errors=errors,
            server_cpu_us=cpu / max(len(latencies), 1) * 1e6,
        )
    finally:
        for chan in chans:
            await chan.close()
