"""Test MCP servers (``support.mcp_servers``) as Cortex configuration and processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cortex_core.adapters.mcp.config import McpConfig, parse_mcp_config

REPO = Path(__file__).resolve().parents[2]
MODULE = "tests.support.mcp_servers"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stdio_table(record: Path, pid_file: Path | None = None, **keys: Any) -> dict[str, Any]:
    """A ``[servers.<name>]`` table that makes Cortex start the test server itself."""
    args = ["-m", MODULE, "--transport", "stdio", "--record", str(record)]
    if pid_file is not None:
        args += ["--pid-file", str(pid_file)]
    return {"command": sys.executable, "args": args, "cwd": str(REPO), **keys}


def http_table(port: int, **keys: Any) -> dict[str, Any]:
    return {"url": f"http://127.0.0.1:{port}/mcp", **keys}


def config(**servers: dict[str, Any]) -> McpConfig:
    """What ``CORTEX_MCP_CONFIG`` would give for these tables."""
    return parse_mcp_config({"servers": servers})


def recorded(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


class HttpServer:
    """The test server on Streamable HTTP, in a process of its own on a fixed port."""

    def __init__(self, port: int, record: Path) -> None:
        self.port = port
        self.record = record
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--transport", "http", "--port", str(self.port),
             "--record", str(self.record)],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the test MCP server exited with {self.process.returncode}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise TimeoutError("the test MCP server did not listen in time")

    def kill(self) -> None:
        """Die at once (SIGKILL): connections drop, nothing is answered."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def http_server(record: Path, port: int | None = None) -> Iterator[HttpServer]:
    server = HttpServer(port or free_port(), record)
    server.start()
    try:
        yield server
    finally:
        server.stop()
