"""``cortex-core serve`` with an MCP server in ``CORTEX_MCP_CONFIG``, as an operator runs it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.mcp import MODULE, REPO
from support.servers import cortex_server


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_server_and_its_stdio_mcp_servers_with_exit_0(tmp_path: Path) -> None:
    pid_file = tmp_path / "files.pid"
    config = tmp_path / "mcp.toml"
    config.write_text(
        "[servers.files]\n"
        f'command = "{sys.executable}"\n'
        f'args = ["-m", "{MODULE}", "--pid-file", "{pid_file}"]\n'
        f'cwd = "{REPO}"\n'
    )
    with cortex_server(tmp_path / "data", {"CORTEX_MCP_CONFIG": str(config)}) as server:
        deadline = time.monotonic() + 30
        while (
            _health(server.address, "cortex.tools.files") != health_pb2.HealthCheckResponse.SERVING
        ):
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.1)
        pid = int(pid_file.read_text())
        assert _alive(pid)
        started = time.monotonic()
        assert server.terminate() == 0
        assert time.monotonic() - started < 10
    assert not _alive(pid), "the MCP server outlived Cortex"
