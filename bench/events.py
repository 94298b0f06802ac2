"""Event fan-out: Cortex's ``SubscribeEvents`` against a bare grpc.aio fan-out.

Both servers run as separate processes on uvloop (the baseline is
``bench.events_bare_server``: one ``asyncio.Queue`` per stream, same messages);
Cortex runs its default configuration (access log on, SQLite, in-process event
log) except for a queue size large enough for the bursts. The same client code,
in this process, drives both: N streams of ``SubscribeEvents`` (100 per channel,
one connection each) and a publisher on its own connection that calls
``WorkspaceService/UpdateWorkspace`` with a counter in the display name; each
update is one ``workspace_updated`` event to every stream.

Per subscriber count N (1, 100, 1,000):

* latency: paced publishes, each waited for on all N streams before the next;
  publish-to-receive = receive time - send time (same clock), p50/p99 over
  every (subscriber, event) pair; also the publish RPC's own p50;
* burst: events published back to back by 4 publishers; events/s delivered =
  frames received / (last receipt - first send); server CPU per frame.

Memory per idle stream: server RSS with 1,000 open idle streams minus RSS after a
warm-up with none, over 1,000. Rounds alternate bare/cortex so noise hits both.

Goals checked at the end (best round of each): events/s at 100 subscribers at least
0.8x bare; p99 at 1,000 subscribers within 1.25x of bare; memory per idle stream
within 1.25x of bare. The publish RPC's own server CPU (1 subscriber: CPU per event)
is printed beside them, because at 100 subscribers it is what separates the two.

    python -m bench.events [--rounds 2] [--sizes 1,100,1000] [--scale 1.0] [--access-log-off]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from cortex.sessions.v1 import workspace_pb2, workspace_service_pb2, workspace_service_pb2_grpc
from google.protobuf import field_mask_pb2

from bench.load import percentile, process_cpu_seconds

PASSWORD = "correct horse battery staple 42"
PREFIX = "bench "
STREAMS_PER_CHANNEL = 100
MEMORY_STREAMS = 1000
LATENCY_EVENTS = {1: 200, 100: 100, 1000: 50}  # paced publishes per size (before --scale)
BURST_EVENTS = {1: 300, 100: 300, 1000: 40}  # 100: 30,000 frames, enough to be steady
PUBLISHERS = 4
FANOUT_GOAL_SIZE, FANOUT_GOAL = 100, 0.8  # issue 10: events/s at 100 subscribers vs bare
QUEUE_SIZE = 4096  # CORTEX_EVENTS_QUEUE_SIZE: a burst must not end a stream as too slow
_READY = re.compile(r"serving on (\S+:\d+)")
# One connection per channel (grpc shares subchannels between equal channels otherwise).
_CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),)


@dataclasses.dataclass(frozen=True)
class SizeResult:
    subscribers: int
    p50_ms: float
    p99_ms: float
    publish_p50_ms: float
    events_per_s: float
    server_cpu_us: float  # per frame delivered, during the burst
    missing: int  # (subscriber, event) pairs never received within the timeout


@dataclasses.dataclass(frozen=True)
class RunResult:
    label: str
    sizes: dict[int, SizeResult]
    idle_rss_kib: float  # server RSS after warm-up, no streams
    per_stream_kib: float  # (RSS with 1,000 idle streams - idle_rss) / 1,000


# ── servers ──────────────────────────────────────────────────────────────────


def _ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        match = _READY.search(line)
        if match:
            return match.group(1)
    raise RuntimeError("server exited before it was ready")


def _stop(proc: subprocess.Popen[str], sig: int | None) -> None:
    try:
        if sig is None:
            assert proc.stdin is not None
            proc.stdin.close()
        else:
            proc.send_signal(sig)
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def bare_server() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.events_bare_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield _ready(proc), proc.pid
    finally:
        _stop(proc, None)


@contextlib.contextmanager
def cortex_server(access_log: bool = True) -> Iterator[tuple[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "CORTEX_GRPC_ADDRESS": "127.0.0.1:0",
            "CORTEX_DATA_DIR": tmp,
            "CORTEX_EVENTS_QUEUE_SIZE": str(QUEUE_SIZE),
        }
        if not access_log:
            env["CORTEX_ACCESS_LOG"] = "false"
        with (Path(tmp) / "server.log").open("w") as log:
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
                _stop(proc, signal.SIGTERM)


def rss_kib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1])
    raise RuntimeError("no VmRSS")


# ── client ───────────────────────────────────────────────────────────────────


class Fanout:
    """The subscribers' and the publisher's side of one server, and the bookkeeping."""

    def __init__(self, address: str, pid: int) -> None:
        self.address = address
        self.pid = pid
        self._publish_channel = grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)
        self._workspaces = workspace_service_pb2_grpc.WorkspaceServiceStub(self._publish_channel)
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._workspace = ""
        self._seq = 0
        self.sent: dict[int, float] = {}
        self.latencies: dict[int, list[float]] = {}
        self._expected = 0
        self._complete: dict[int, asyncio.Future[None]] = {}
        self.last_receipt = 0.0
        self.stream_errors = 0
        self._live: set[int] = set()
        self._all_live = asyncio.Event()
        self._channels: list[grpc.aio.Channel] = []
        self._calls: list[grpc.aio.UnaryStreamCall] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def setup(self) -> None:
        await asyncio.wait_for(self._publish_channel.channel_ready(), 10)
        auth = auth_service_pb2_grpc.AuthServiceStub(self._publish_channel)
        registered = await auth.Register(
            auth_service_pb2.RegisterRequest(
                email=f"bench-{uuid.uuid4().hex[:8]}@example.com",
                password=PASSWORD,
                display_name="Bench",
            ),
            timeout=30,
        )
        self._metadata = (("authorization", f"Bearer {registered.access_token}"),)
        listed = await self._workspaces.ListWorkspaces(
            workspace_service_pb2.ListWorkspacesRequest(), metadata=self._metadata, timeout=10
        )
        self._workspace = listed.workspaces[0].name

    async def publish(self) -> tuple[int, float]:
        """Publish one event; its sequence number and the publish RPC's duration."""
        self._seq += 1
        seq = self._seq
        request = workspace_service_pb2.UpdateWorkspaceRequest(
            workspace=workspace_pb2.Workspace(name=self._workspace, display_name=f"{PREFIX}{seq}"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
        self.latencies[seq] = []
        self._complete[seq] = asyncio.get_running_loop().create_future()
        start = self.sent[seq] = time.perf_counter()
        await self._workspaces.UpdateWorkspace(request, metadata=self._metadata, timeout=30)
        return seq, time.perf_counter() - start

    async def open(self, n: int) -> None:
        """Open ``n`` streams and wait until every one has received an event."""
        self._live.clear()
        self._all_live.clear()
        self._expected = n
        request = event_service_pb2.SubscribeEventsRequest()
        for c in range(math.ceil(n / STREAMS_PER_CHANNEL)):
            channel = grpc.aio.insecure_channel(self.address, options=_CHANNEL_OPTIONS)
            await asyncio.wait_for(channel.channel_ready(), 10)
            self._channels.append(channel)
            stub = event_service_pb2_grpc.EventServiceStub(channel)
            for i in range(c * STREAMS_PER_CHANNEL, min(n, (c + 1) * STREAMS_PER_CHANNEL)):
                call = stub.SubscribeEvents(request, metadata=self._metadata)
                self._calls.append(call)
                self._tasks.append(asyncio.create_task(self._receive(i, call)))
        # Streams are live once an event reaches them: publish until all have one.
        deadline = time.perf_counter() + 60
        while not self._all_live.is_set():
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {len(self._live)} of {n} streams received events")
            await self.publish()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_live.wait(), 2)
        await self.settle()

    async def settle(self, seconds: float = 0.5) -> None:
        """Let in-flight frames drain and forget them."""
        await asyncio.sleep(seconds)
        for future in self._complete.values():
            if not future.done():
                future.cancel()
        self._complete.clear()
        self.sent.clear()
        self.latencies.clear()

    async def close(self) -> None:
        for call in self._calls:
            call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()
        self._calls.clear()
        self._tasks.clear()
        self._channels.clear()
        self._expected = 0

    async def aclose(self) -> None:
        await self.close()
        await self._publish_channel.close()

    async def _receive(self, index: int, call: grpc.aio.UnaryStreamCall) -> None:
        try:
            async for frame in call:
                now = time.perf_counter()
                name = frame.event.workspace_updated.workspace.display_name
                if not name.startswith(PREFIX):
                    continue
                if index not in self._live:
                    self._live.add(index)
                    if len(self._live) >= self._expected:
                        self._all_live.set()
                seq = int(name[len(PREFIX) :])
                sent = self.sent.get(seq)
                if sent is None:
                    continue
                samples = self.latencies[seq]
                samples.append(now - sent)
                self.last_receipt = now
                if len(samples) >= self._expected:
                    future = self._complete[seq]
                    if not future.done():
                        future.set_result(None)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.stream_errors += 1

    async def wait_all(self, seqs: list[int], limit: float) -> int:
        """Wait for every stream to receive ``seqs``; the (stream, event) pairs missing."""
        pending = [self._complete[s] for s in seqs]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*pending), limit)
        return sum(max(0, self._expected - len(self.latencies[s])) for s in seqs)


async def measure_size(fanout: Fanout, n: int, scale: float) -> SizeResult:
    """Latency then burst with the ``n`` streams already open."""
    latencies: list[float] = []
    publish_times: list[float] = []
    missing = 0
    for _ in range(max(5, round(LATENCY_EVENTS.get(n, 50) * scale))):
        seq, took = await fanout.publish()
        publish_times.append(took)
        missing += await fanout.wait_all([seq], limit=10)
        latencies.extend(fanout.latencies[seq])
        await asyncio.sleep(0.005)
    await fanout.settle(0.2)

    burst = max(5, round(BURST_EVENTS.get(n, 40) * scale))
    cpu_before = process_cpu_seconds(fanout.pid)
    start = time.perf_counter()
    seqs: list[int] = []

    async def publisher(count: int) -> None:
        for _ in range(count):
            seq, _took = await fanout.publish()
            seqs.append(seq)

    shares = [burst // PUBLISHERS + (i < burst % PUBLISHERS) for i in range(PUBLISHERS)]
    await asyncio.gather(*(publisher(k) for k in shares))
    missing += await fanout.wait_all(seqs, limit=60)
    frames = sum(len(fanout.latencies[s]) for s in seqs)
    wall = max(fanout.last_receipt - start, 1e-9)
    cpu = process_cpu_seconds(fanout.pid) - cpu_before
    await fanout.settle(0.2)
    return SizeResult(
        subscribers=n,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        publish_p50_ms=percentile(publish_times, 50) * 1000,
        events_per_s=frames / wall,
        server_cpu_us=cpu / max(frames, 1) * 1e6,
        missing=missing,
    )


async def run(label: str, address: str, pid: int, sizes: list[int], scale: float) -> RunResult:
    fanout = Fanout(address, pid)
    try:
        await fanout.setup()
        # Warm-up: a few streams and events, then the idle baseline with no streams.
        await fanout.open(10)
        for _ in range(20):
            await fanout.publish()
        await fanout.close()
        await fanout.settle(1.0)
        idle = rss_kib(pid)

        results: dict[int, SizeResult] = {}
        per_stream = float("nan")
        for n in sorted(set(sizes) | {MEMORY_STREAMS}, reverse=True):
            await fanout.open(n)
            if n == MEMORY_STREAMS:
                await asyncio.sleep(1.0)
                per_stream = (rss_kib(pid) - idle) / MEMORY_STREAMS
            if n in sizes:
                results[n] = await measure_size(fanout, n, scale)
            await fanout.close()
            await fanout.settle(0.5)
        if fanout.stream_errors:
            print(f"  {label}: {fanout.stream_errors} streams ended with an error", file=sys.stderr)
        return RunResult(label, results, idle, per_stream)
    finally:
        await fanout.aclose()


# ── report ───────────────────────────────────────────────────────────────────

HEADER = (
    f"{'server':<30} {'subs':>5} {'p50 ms':>8} {'p99 ms':>8} {'pub p50':>8}"
    f" {'events/s':>9} {'CPU µs/ev':>9} {'missing':>7}"
)


def print_table(results: list[RunResult]) -> None:
    print(HEADER)
    for result in results:
        for size in result.sizes.values():
            print(
                f"{result.label:<30} {size.subscribers:>5} {size.p50_ms:>8.2f} {size.p99_ms:>8.2f}"
                f" {size.publish_p50_ms:>8.2f} {size.events_per_s:>9.0f}"
                f" {size.server_cpu_us:>9.1f} {size.missing:>7}"
            )
    print()
    print(f"{'server':<30} {'idle RSS MiB':>12} {'KiB per idle stream (1,000 open)':>33}")
    for result in results:
        print(
            f"{result.label:<30} {result.idle_rss_kib / 1024:>12.1f} {result.per_stream_kib:>33.1f}"
        )


def print_ratios(bare: list[RunResult], cortex: list[RunResult], sizes: list[int]) -> None:
    """Best round of each (lowest latency/CPU/memory, highest events/s)."""
    print("\nratio cortex/bare (best round of each):")
    for n in sizes:
        b = [r.sizes[n] for r in bare]
        c = [r.sizes[n] for r in cortex]
        print(
            f"  {n:>5} subscribers: p50 {min(x.p50_ms for x in c) / min(x.p50_ms for x in b):.2f}x,"
            f" p99 {min(x.p99_ms for x in c) / min(x.p99_ms for x in b):.2f}x,"
            f" events/s {max(x.events_per_s for x in c) / max(x.events_per_s for x in b):.2f}x,"
            f" server CPU per event"
            f" {min(x.server_cpu_us for x in c) / min(x.server_cpu_us for x in b):.2f}x"
        )
    if FANOUT_GOAL_SIZE in sizes:
        bare_rate = max(r.sizes[FANOUT_GOAL_SIZE].events_per_s for r in bare)
        cortex_rate = max(r.sizes[FANOUT_GOAL_SIZE].events_per_s for r in cortex)
        ratio = cortex_rate / bare_rate
        print(
            f"goal events/s at {FANOUT_GOAL_SIZE} subscribers at least {FANOUT_GOAL}x bare:"
            f" cortex {cortex_rate:.0f} / bare {bare_rate:.0f} = {ratio:.2f}x"
            f" -> {'met' if ratio >= FANOUT_GOAL else 'MISSED'}"
        )
    if 1 in sizes:
        bare_cpu = min(r.sizes[1].server_cpu_us for r in bare)
        cortex_cpu = min(r.sizes[1].server_cpu_us for r in cortex)
        print(
            f"publish path (1 subscriber, server CPU per event): cortex {cortex_cpu:.0f} µs"
            f" / bare {bare_cpu:.0f} µs = {cortex_cpu / bare_cpu:.2f}x"
        )
    if MEMORY_STREAMS in sizes:
        bare_p99 = min(r.sizes[MEMORY_STREAMS].p99_ms for r in bare)
        cortex_p99 = min(r.sizes[MEMORY_STREAMS].p99_ms for r in cortex)
        ratio = cortex_p99 / bare_p99
        print(
            f"goal p99 at {MEMORY_STREAMS:,} subscribers within 1.25x of bare:"
            f" cortex {cortex_p99:.2f} ms / bare {bare_p99:.2f} ms = {ratio:.2f}x"
            f" -> {'met' if ratio <= 1.25 else 'MISSED'}"
        )
    bare_kib = min(r.per_stream_kib for r in bare)
    cortex_kib = min(r.per_stream_kib for r in cortex)
    ratio = cortex_kib / bare_kib
    print(
        f"goal memory per idle stream within 1.25x of bare:"
        f" cortex {cortex_kib:.1f} KiB / bare {bare_kib:.1f} KiB = {ratio:.2f}x"
        f" -> {'met' if ratio <= 1.25 else 'MISSED'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="1,100,1000", help="subscriber counts")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies events per size")
    parser.add_argument(
        "--access-log-off",
        action="store_true",
        help="add a Cortex row with CORTEX_ACCESS_LOG=false",
    )
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    started = time.perf_counter()
    bare: list[RunResult] = []
    cortex: list[RunResult] = []
    extra: list[RunResult] = []
    for round_no in range(1, args.rounds + 1):
        with bare_server() as (address, pid):
            bare.append(
                uvloop.run(
                    run(f"bare grpc.aio (round {round_no})", address, pid, sizes, args.scale)
                )
            )
        with cortex_server() as (address, pid):
            cortex.append(
                uvloop.run(
                    run(f"cortex default (round {round_no})", address, pid, sizes, args.scale)
                )
            )
        if args.access_log_off:
            with cortex_server(access_log=False) as (address, pid):
                extra.append(
                    uvloop.run(
                        run(f"cortex no access log ({round_no})", address, pid, sizes, args.scale)
                    )
                )
    print(
        f"Event fan-out: publish (UpdateWorkspace) to receive (SubscribeEvents), "
        f"{STREAMS_PER_CHANNEL} streams per connection, {args.rounds} rounds,"
        f" {time.perf_counter() - started:.0f} s"
    )
    print_table([*bare, *cortex, *extra])
    print_ratios(bare, cortex, sizes)


if __name__ == "__main__":
    main()
