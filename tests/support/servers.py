"""Start ``cortex-core serve`` as a real subprocess on a free port."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORTEX = Path(sys.executable).with_name("cortex-core")
_READY = re.compile(r"serving on (\S+:\d+)")


@dataclass
class ServerProcess:
    process: subprocess.Popen[str]
    address: str
    log_path: Path

    def logs(self) -> str:
        return self.log_path.read_text()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@contextlib.contextmanager
def cortex_server(
    data_dir: Path, env: Mapping[str, str] | None = None, startup_timeout: float = 30.0
) -> Iterator[ServerProcess]:
    """Run a server with its own data dir; yield once it reports it is serving."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")},
        "CORTEX_GRPC_ADDRESS": "127.0.0.1:0",
        "CORTEX_DATA_DIR": str(data_dir),
        "CORTEX_LOG_LEVEL": "INFO",
        "CORTEX_SHUTDOWN_GRACE": "5",
        **(env or {}),
    }
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [str(CORTEX), "serve"],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=full_env,
            cwd=REPO,
        )
        try:
            address = _wait_ready(process, startup_timeout, log_path)
            server = ServerProcess(process, address, log_path)
            yield server
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout:
                process.stdout.close()


def _wait_ready(process: subprocess.Popen[str], timeout: float, log_path: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            match = _READY.search(line)
            if match:
                return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(
                f"cortex-core exited with {process.returncode}:\n{log_path.read_text()}"
            )
    raise RuntimeError(f"cortex-core did not report serving in {timeout}s:\n{log_path.read_text()}")
