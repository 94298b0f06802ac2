"""Every generated binding makes real, authenticated round trips to ``cortex-core serve``.

Each client in ``tests/clients/<language>/`` goes through that language's
generated stubs: ``cortex.auth.v1.AuthService/GetCurrentUser`` without a token
(printing ``anonymous=<CODE_NAME>``), then ``AuthService/Register`` with the
email this test passes, ``GetCurrentUser`` with ``authorization: Bearer
<access token>`` (printing ``email=...``) and
``cortex.sessions.v1.WorkspaceService/ListWorkspaces`` with the same token
(printing ``workspaces=<count>`` and ``role=<caller_role of the first>``). On
an RPC error a client prints ``status=<CODE_NAME>`` and exits non-zero.
Registration creates a personal workspace the new user owns, so a fresh
account sees exactly one, as WORKSPACE_ROLE_OWNER. A missing toolchain fails
the test with the command that installs it (``make tools``); nothing here is
skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from support.golang import checked, go_build, go_modules_ready

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "tests" / "clients"
GENERATED = REPO / "generated"
NODE_MODULES = REPO / "tools" / "node_modules"


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool!r} is not on PATH; run 'make tools' to install it")
    return path


def _run(command: list[str], env: dict[str, str] | None = None) -> str:
    """Runs a client and returns its stdout, failing with its output otherwise."""
    return checked(command, env=env)


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go client, a module built offline (-mod=vendor) against Debian's Go libraries."""
    go_modules_ready(GENERATED / "go", CLIENTS / "go")
    return go_build(CLIENTS / "go", ".", tmp_path_factory.mktemp("go-client") / "go-client")


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


def _go(address: str, email: str, request: pytest.FixtureRequest) -> str:
    binary: Path = request.getfixturevalue("go_client")
    return _run([str(binary), address, email])


def _typescript(address: str, email: str, request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("node_links")
    return _run([_require("node"), str(CLIENTS / "ts" / "client.mjs"), address, email])


def _betterproto(address: str, email: str, request: pytest.FixtureRequest) -> str:
    return _run(
        [sys.executable, str(CLIENTS / "betterproto" / "client.py"), address, email],
        env={"PYTHONPATH": str(GENERATED / "betterproto")},
    )


def _python_grpcio(address: str, email: str, request: pytest.FixtureRequest) -> str:
    return _run(
        [sys.executable, str(CLIENTS / "python" / "client.py"), address, email],
        env={"PYTHONPATH": str(REPO / "clients" / "python" / "src")},
    )


CLIENT_RUNNERS: dict[str, Callable[[str, str, pytest.FixtureRequest], str]] = {
    "go": _go,
    "typescript": _typescript,
    "betterproto": _betterproto,
    "python-grpcio": _python_grpcio,
}


@pytest.mark.parametrize("language", sorted(CLIENT_RUNNERS))
def test_generated_stubs_register_and_call_authenticated_rpcs(
    language: str, server_address: str, request: pytest.FixtureRequest
) -> None:
    email = f"{language}-{uuid.uuid4()}@example.com"

    lines = CLIENT_RUNNERS[language](server_address, email, request).splitlines()

    assert "anonymous=UNAUTHENTICATED" in lines, lines
    assert f"email={email}" in lines, lines
    assert "workspaces=1" in lines, lines
    assert "role=WORKSPACE_ROLE_OWNER" in lines, lines
