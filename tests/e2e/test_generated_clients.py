"""Every generated binding makes a real wire round trip to ``cortex-core serve``.

Each client in ``tests/clients/<language>/`` calls
``cortex.experts.v1.ExpertService/ListExperts`` through that language's
generated stub and prints ``status=<CODE_NAME>``. ExpertService has no
implementation yet, so the server's answer is UNIMPLEMENTED; seeing that code
proves the stub encoded a request, reached the server over HTTP/2 and decoded
the gRPC status. A missing toolchain fails the test with the command that
installs it (``make tools``); nothing here is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "tests" / "clients"
GENERATED = REPO / "generated"
NODE_MODULES = REPO / "tools" / "node_modules"
GO_IMPORT_ROOT = Path("github.com/cortexcore/cortex-core")
DEBIAN_GOPATH = Path("/usr/share/gocode")

# What ListExperts answers today. When ExpertService is implemented this
# becomes UNAUTHENTICATED (the clients send no token): still a round trip.
EXPECTED_STATUS = "UNIMPLEMENTED"
CLIENT_TIMEOUT = 60


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool!r} is not on PATH; run 'make tools' to install it")
    return path


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    """Runs a client and returns its stdout, failing with its output otherwise."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go client, built offline in GOPATH mode against Debian's Go libraries."""
    _require("go")
    if not (DEBIAN_GOPATH / "src" / "google.golang.org" / "grpc").is_dir():
        pytest.fail(f"Go gRPC sources are missing from {DEBIAN_GOPATH}; run 'make tools'")
    build = tmp_path_factory.mktemp("go-client")
    gopath = build / "gopath"
    link = gopath / "src" / GO_IMPORT_ROOT / "generated"
    link.parent.mkdir(parents=True)
    link.symlink_to(GENERATED, target_is_directory=True)
    binary = build / "go-client"
    env = {
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}{os.pathsep}{DEBIAN_GOPATH}",
        "GOFLAGS": "",
        "GOCACHE": os.environ.get("GOCACHE", str(build / "cache")),
    }
    result = subprocess.run(
        ["go", "build", "-o", str(binary), "."],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=CLIENTS / "go",
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, f"go build failed:\n{result.stdout}\n{result.stderr}"
    return binary


@pytest.fixture(scope="module")
def node_links() -> None:
    """Links that let node resolve @connectrpc/* and @bufbuild/* from tools/."""
    _require("node")
    if not (NODE_MODULES / "@connectrpc" / "connect-node").is_dir():
        pytest.fail(f"{NODE_MODULES} is missing Connect; run 'make tools' (npm ci --prefix tools)")
    for directory in (GENERATED / "ts", CLIENTS / "ts"):
        link = directory / "node_modules"
        if not link.exists():
            link.unlink(missing_ok=True)  # a dangling link
            link.symlink_to(os.path.relpath(NODE_MODULES, directory), target_is_directory=True)


def _go(address: str, request: pytest.FixtureRequest) -> str:
    binary: Path = request.getfixturevalue("go_client")
    return _run([str(binary), address])


def _typescript(address: str, request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("node_links")
    return _run([_require("node"), str(CLIENTS / "ts" / "client.mjs"), address])


def _betterproto(address: str, request: pytest.FixtureRequest) -> str:
    return _run(
        [sys.executable, str(CLIENTS / "betterproto" / "client.py"), address],
        env={"PYTHONPATH": str(GENERATED / "betterproto")},
    )


def _python_grpcio(address: str, request: pytest.FixtureRequest) -> str:
    return _run(
        [sys.executable, str(CLIENTS / "python" / "client.py"), address],
        env={"PYTHONPATH": str(GENERATED / "python")},
    )


CLIENT_RUNNERS: dict[str, Callable[[str, pytest.FixtureRequest], str]] = {
    "go": _go,
    "typescript": _typescript,
    "betterproto": _betterproto,
    "python-grpcio": _python_grpcio,
}


@pytest.mark.parametrize("language", sorted(CLIENT_RUNNERS))
def test_generated_stub_reaches_the_server_and_reads_its_status(
    language: str, server_address: str, request: pytest.FixtureRequest
) -> None:
    stdout = CLIENT_RUNNERS[language](server_address, request)

    assert f"status={EXPECTED_STATUS}" in stdout.split(), stdout
