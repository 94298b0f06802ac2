"""InvokeTool through Cortex against calling the same MCP server directly with the SDK.

One MCP server process (the test server, ``tests.support.mcp_servers``, on Streamable
HTTP) serves both: ``cortex-core serve`` configured with it as ``[servers.bench]``, and
an ``mcp.Client`` of this process. Each round calls its ``echo`` tool ``--calls`` times
through each path, ``--concurrency`` calls in flight, alternating paths so machine noise
hits both; latency is per call, seen by the caller.

    python -m bench.tools [--calls 400] [--concurrency 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc.aio
import uvloop
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from cortex.experts.v1 import tool_service_pb2, tool_service_pb2_grpc
from cortex.sessions.v1 import workspace_service_pb2, workspace_service_pb2_grpc
from google.protobuf import struct_pb2
from mcp import Client

from bench.load import percentile

REPO = Path(__file__).resolve().parents[1]
_READY = re.compile(r"serving on (\S+:\d+)")
ARGUMENTS = {"text": "a short sentence to echo back, as a tool call would carry"}


@contextmanager
def mcp_server(port: int) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mcp_servers", "--transport", "http",
         "--port", str(port)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        _wait_for_port(port)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("the MCP server did not listen")


@contextmanager
def cortex_server(data_dir: Path, url: str) -> Iterator[str]:
    config = data_dir / "mcp.toml"
    config.write_text(f'[servers.bench]\nurl = "{url}"\n')
    env = {
        **os.environ,
        "CORTEX_GRPC_ADDRESS": "127.0.0.1:0",
        "CORTEX_DATA_DIR": str(data_dir),
        "CORTEX_MCP_CONFIG": str(config),
        "CORTEX_ACCESS_LOG": "false",
    }
    with (data_dir / "server.log").open("w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("cortex-core")), "serve"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if match := _READY.search(line):
                    yield match.group(1)
                    break
            else:
                raise RuntimeError("cortex exited before it was ready")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


async def _timed(
    call: Callable[[], Awaitable[object]], calls: int, concurrency: int
) -> list[float]:
    latencies: list[float] = []
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def through_cortex(address: str, calls: int, concurrency: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        registered = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(
            auth_service_pb2.RegisterRequest(
                email=f"bench-{uuid.uuid4().hex[:8]}@example.com",
                password="correct horse battery staple 42",
                display_name="Bench",
            )
        )
        metadata = [("authorization", f"Bearer {registered.access_token}")]
        workspaces = await workspace_service_pb2_grpc.WorkspaceServiceStub(channel).ListWorkspaces(
            workspace_service_pb2.ListWorkspacesRequest(), metadata=metadata
        )
        tools = tool_service_pb2_grpc.ToolServiceStub(channel)
        arguments = struct_pb2.Struct()
        arguments.update(ARGUMENTS)
        request = tool_service_pb2.InvokeToolRequest(
            name="tools/bench.echo", workspace=workspaces.workspaces[0].name, input=arguments
        )
        for _ in range(200):  # until the session is up
            try:
                await tools.InvokeTool(request, metadata=metadata, timeout=10)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)

        async def one() -> object:
            response = await tools.InvokeTool(request, metadata=metadata, timeout=10)
            assert not response.HasField("error")
            return response

        for _ in range(20):
            await one()
        return await _timed(one, calls, concurrency)


async def direct(url: str, calls: int, concurrency: int) -> list[float]:
    async with Client(url, cache=None) as client:
        await client.list_tools()

        async def one() -> object:
            result = await client.call_tool("echo", ARGUMENTS)
            assert not result.is_error
            return result

        for _ in range(20):
            await one()
        return await _timed(one, calls, concurrency)


def _row(name: str, samples: list[float]) -> str:
    return (
        f"{name:<34} {len(samples):>6} {percentile(samples, 50):>9.2f} "
        f"{percentile(samples, 99):>9.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    rows: list[tuple[str, list[float]]] = []
    sdk: list[float] = []
    cortex: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, mcp_server(port) as url:
        with cortex_server(Path(tmp), url) as address:
            for round_no in range(args.rounds):
                found = uvloop.run(direct(url, args.calls, args.concurrency))
                rows.append((f"SDK client direct (round {round_no + 1})", found))
                sdk += found
                found = uvloop.run(through_cortex(address, args.calls, args.concurrency))
                rows.append((f"InvokeTool via Cortex (round {round_no + 1})", found))
                cortex += found
    print(
        f"One MCP tool call (echo, Streamable HTTP), {args.concurrency} in flight, "
        f"{args.calls} calls per round"
    )
    print(f"{'path':<34} {'calls':>6} {'p50 ms':>9} {'p99 ms':>9}")
    for name, samples in rows:
        print(_row(name, samples))
    print(
        f"ratio cortex/direct (all rounds): p50 "
        f"{percentile(cortex, 50) / percentile(sdk, 50):.2f}x, "
        f"p99 {percentile(cortex, 99) / percentile(sdk, 99):.2f}x"
    )


if __name__ == "__main__":
    main()
