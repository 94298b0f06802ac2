"""The client packages' README examples run against a real ``cortex-core serve``.

``clients/python/examples/quickstart.py`` (cortex-core-client) and
``clients/go/examples/quickstart`` (the Go module, built offline with ``-mod=vendor`` over
Debian's Go libraries, as clients/go/README.md says) each: sign up, resume the sign-in
from a stored refresh token with five concurrent calls sharing one refresh, read a
BadRequest violation, stream a reply and cancel it, resume an event stream from its token
without a gap, and watch an ``experts/echo`` task to its end. A missing Go toolchain fails
with the command that installs it; nothing is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GO_MODULES = [REPO / "generated" / "go", REPO / "clients" / "go"]
EXAMPLE_TIMEOUT = 90

EXPECTED = [
    "refreshes=1",
    "workspaces=1",
    "error_reason=INVALID_ARGUMENT",
    "error_field=workspace.display_name",
    "reply_started=true",
    "reply_cancelled=true",
    "events_resumed_in_order=true",
    "task_state=TASK_STATE_SUCCEEDED",
]


# Go's own build cache (~/.cache/go-build) is kept: grpc compiles once per machine.
GO_ENV = {**os.environ, "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GO111MODULE": "on"}


def _checked(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def go_quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go example, built offline as the README says; both modules pass go vet."""
    if shutil.which("go") is None:
        pytest.fail("'go' is not on PATH; run 'make tools' to install it")
    build = tmp_path_factory.mktemp("go-quickstart")
    _checked(["scripts/go_vendor.sh", *map(str, GO_MODULES)], REPO)
    for module in GO_MODULES:
        _checked(["go", "vet", "./..."], module, GO_ENV)
    binary = build / "quickstart"
    _checked(["go", "build", "-o", str(binary), "./examples/quickstart"], GO_MODULES[1], GO_ENV)
    return binary


def _python(address: str, request: pytest.FixtureRequest) -> list[str]:
    example = REPO / "clients" / "python" / "examples" / "quickstart.py"
    return [sys.executable, str(example), address]


def _go(address: str, request: pytest.FixtureRequest) -> list[str]:
    binary: Path = request.getfixturevalue("go_quickstart")
    return [str(binary), address]


#: Only the Go example shows the refresh after a rejected token; the Python one is tested in
#: tests/integration/test_client_helpers.py.
EXTRA = {"go": ["refreshes_after_rejection=2"], "python": []}


@pytest.mark.parametrize("command", [_python, _go], ids=["python", "go"])
def test_quickstart_example_runs_every_step_against_a_real_server(
    command: object, server_address: str, request: pytest.FixtureRequest
) -> None:
    argv = command(server_address, request)  # type: ignore[operator]
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT, cwd=REPO, check=False
    )

    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    for expected in EXPECTED + EXTRA[command.__name__.lstrip("_")]:  # type: ignore[attr-defined]
        assert expected in lines, (expected, lines)
