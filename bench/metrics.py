"""What metrics and tracing cost per call: the same server with them off and on.

Both runs serve ``AuthService/GetCurrentUser`` (authentication plus a database
read: a call that is traced, with SQL child spans, and counted) to the same
closed-loop client, alternating rounds. "On" is ``CORTEX_METRICS_ADDRESS`` set
and every span exported over OTLP/gRPC to a receiver in this process (it only
counts the spans), sampled at 100 %. The server's CPU time per call is the
least noisy figure on a shared machine.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2 as auth_pb
from cortex.auth.v1 import auth_service_pb2_grpc as auth_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.load import HEADER, Result, run_load
from bench.unary import cortex_server


class _Sink(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request: Any, context: Any) -> Any:
        self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def _token(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = auth_grpc.AuthServiceStub(channel)
        response = await stub.Register(
            auth_pb.RegisterRequest(
                email="bench-metrics@example.com",
                password="correct horse battery staple 42",
                display_name="Bench",
            ),
            timeout=30,
        )
        return str(response.access_token)


def _round(label: str, data_dir: Path, env: dict[str, str], args: argparse.Namespace) -> Result:
    with cortex_server(data_dir, env) as (address, pid):
        token = uvloop.run(_token(address))
        metadata = (("authorization", f"Bearer {token}"),)

        async def call(channel: grpc.aio.Channel) -> object:
            stub = auth_grpc.AuthServiceStub(channel)
            return await stub.GetCurrentUser(
                auth_pb.GetCurrentUserRequest(), metadata=metadata, timeout=5
            )

        return uvloop.run(
            run_load(
                label,
                address,
                call,
                concurrency=args.concurrency,
                duration=args.duration,
                server_pid=pid,
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    sink = _Sink()
    receiver = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, receiver)
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    on_env = {
        "CORTEX_METRICS_ADDRESS": "127.0.0.1:0",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    off_env = {"OTEL_SDK_DISABLED": "true", "CORTEX_METRICS_ADDRESS": ""}
    off: list[Result] = []
    on: list[Result] = []
    try:
        for round_no in range(args.rounds):
            with tempfile.TemporaryDirectory() as tmp:
                off.append(_round(f"off (round {round_no + 1})", Path(tmp), off_env, args))
            with tempfile.TemporaryDirectory() as tmp:
                on.append(
                    _round(f"metrics+tracing (round {round_no + 1})", Path(tmp), on_env, args)
                )
    finally:
        receiver.stop(None)
    print("AuthService/GetCurrentUser, closed loop,", end=" ")
    print(f"{args.concurrency} in flight, {args.duration:.0f} s per round")
    print(HEADER)
    for result in [*off, *on]:
        print(result.row())
    best_off = max(off, key=lambda r: r.rps)
    best_on = max(on, key=lambda r: r.rps)
    cpu_off = min(r.server_cpu_us for r in off)
    cpu_on = min(r.server_cpu_us for r in on)
    print(
        f"ratio on/off: throughput {best_on.rps / best_off.rps:.2f}x, "
        f"p50 {best_on.p50_ms / best_off.p50_ms:.2f}x, p99 {best_on.p99_ms / best_off.p99_ms:.2f}x"
    )
    print(
        f"server CPU per call: off {cpu_off:.0f} µs, on {cpu_on:.0f} µs "
        f"(+{cpu_on - cpu_off:.0f} µs, {cpu_on / cpu_off:.2f}x); spans received: {sink.spans}"
    )


if __name__ == "__main__":
    main()
