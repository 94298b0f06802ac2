"""Run Envoy from the committed envoy/envoy.yaml in front of a test server.

Three kinds of lines change: the listener and admin ports become 0 (Envoy picks free ones
and reports them, so nothing races for a port), the upstream is the test server, and the
console's static upstream (when given) is the test's file server.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from cortex_core.cluster import admin_get as http_get
from support.mcp import free_port
from support.servers import ServerProcess, cortex_server

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "envoy" / "envoy.yaml"
ENVOY = Path(sys.executable).with_name("envoy")
STARTUP_TIMEOUT = 30.0


@dataclass
class RunningEnvoy:
    process: subprocess.Popen[bytes]
    admin: str
    listener: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def rewritten_config(upstream: str, console: str | None = None) -> str:
    """The committed config with ports 0 and the upstreams replaced; fail if a line moved."""
    host, port = upstream.rsplit(":", 1)
    text = CONFIG.read_text()
    replacements = {
        "{ address: 127.0.0.1, port_value: 8080 }": "{ address: 127.0.0.1, port_value: 0 }",
        "{ address: 127.0.0.1, port_value: 9901 }": "{ address: 127.0.0.1, port_value: 0 }",
        "{ address: 127.0.0.1, port_value: 50051 }": f"{{ address: {host}, port_value: {port} }}",
    }
    if console is not None:
        console_host, console_port = console.rsplit(":", 1)
        replacements["{ address: 127.0.0.1, port_value: 8081 }"] = (
            f"{{ address: {console_host}, port_value: {console_port} }}"
        )
    for old, new in replacements.items():
        assert text.count(old) == 1, f"expected exactly one {old!r} in {CONFIG}"
        text = text.replace(old, new)
    return text


def _wait_until_ready(
    process: subprocess.Popen[bytes], admin_path: Path, upstream: str, log_path: Path
) -> tuple[str, str]:
    """Poll until Envoy reports its admin address, its listener and a healthy upstream."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    healthy = f"cortex::{upstream}::health_flags::healthy"
    last_error = "no admin address yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"envoy exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            admin = admin_path.read_text().strip()
            if admin:
                listeners = json.loads(http_get(admin, "/listeners?format=json"))
                socket = listeners["listener_statuses"][0]["local_address"]["socket_address"]
                listener = f"{socket['address']}:{socket['port_value']}"
                clusters = http_get(admin, "/clusters")
                if healthy in clusters.splitlines():
                    return admin, listener
                last_error = f"upstream not healthy yet:\n{clusters}"
        except (OSError, ValueError, KeyError, IndexError) as error:
            last_error = repr(error)
        time.sleep(0.1)
    pytest.fail(f"envoy not ready in {STARTUP_TIMEOUT}s ({last_error}):\n{log_path.read_text()}")


@contextlib.contextmanager
def running_envoy(
    upstream: str, tmp_path: Path, console: str | None = None
) -> Iterator[RunningEnvoy]:
    """Envoy from envoy/envoy.yaml in front of ``upstream``; always stopped."""
    config_path = tmp_path / "envoy.yaml"
    config_path.write_text(rewritten_config(upstream, console))
    admin_path = tmp_path / "admin-address"
    log_path = tmp_path / "envoy.log"
    command = [
        str(ENVOY),
        "-c",
        str(config_path),
        "--admin-address-path",
        str(admin_path),
        # No shared-memory hot-restart domain, so a developer's `make envoy` does not clash.
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "info",
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            admin, listener = _wait_until_ready(process, admin_path, upstream, log_path)
            yield RunningEnvoy(process, admin, listener, log_path)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class ServerBehindEnvoy:
    """One ``cortex-core serve`` on a fixed port with Envoy in front, that a test kills."""

    envoy: RunningEnvoy
    address: str
    server: ServerProcess
    _restart: Callable[[], ServerProcess]

    def kill_and_restart(self) -> None:
        """SIGKILL the server (Envoy resets its streams) and start it again on its port
        with the same data, returning once it serves."""
        self.server.process.kill()
        self.server.process.wait()
        self.server = self._restart()


@contextlib.contextmanager
def server_behind_envoy(
    tmp_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[ServerBehindEnvoy]:
    address = f"127.0.0.1:{free_port()}"
    full_env = {**(env or {}), "CORTEX_GRPC_ADDRESS": address}
    with contextlib.ExitStack() as stack:

        def start() -> ServerProcess:
            return stack.enter_context(cortex_server(tmp_path / "server", env=full_env))

        first = start()
        (tmp_path / "envoy").mkdir(exist_ok=True)
        envoy = stack.enter_context(running_envoy(address, tmp_path / "envoy"))
        yield ServerBehindEnvoy(envoy, address, first, start)
