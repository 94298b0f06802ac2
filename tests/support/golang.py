"""Build and vet the Go modules offline, as clients/go/README.md says.

There is no Go module proxy: ``scripts/go_vendor.sh`` links Debian's Go libraries
(``make tools``) as each module's ``vendor/``, and go runs with ``-mod=vendor``. Go's own
build cache (~/.cache/go-build) is kept, so grpc compiles once per machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.servers import REPO

DEBIAN_GOCODE = Path("/usr/share/gocode/src")
GO_ENV = {"GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GO111MODULE": "on"}


def checked(command: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    """Runs ``command`` and returns its stdout, failing the test with its output otherwise."""
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def go_modules_ready(*modules: Path) -> None:
    """Fails (never skips) without Go or Debian's Go libraries; vendors ``modules``."""
    if shutil.which("go") is None:
        pytest.fail("'go' is not on PATH; run 'make tools' to install it")
    if not (DEBIAN_GOCODE / "google.golang.org" / "grpc").is_dir():
        pytest.fail(f"Go gRPC sources are missing from {DEBIAN_GOCODE}; run 'make tools'")
    checked(["scripts/go_vendor.sh", *map(str, modules)])


def go_build(module: Path, package: str, output: Path) -> Path:
    checked(["go", "build", "-o", str(output), package], module, GO_ENV)
    return output


def go_vet(module: Path) -> None:
    checked(["go", "vet", "./..."], module, GO_ENV)
