"""What a new user meets first: what `make run` installs, the README's promises, and
the generated TypeScript package's dependency."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _make_dry_run(target: str, tmp_path: Path) -> list[str]:
    """The commands ``make <target>`` would run from a fresh clone (no venv yet)."""
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed")
    result = subprocess.run(
        [make, "--dry-run", "--always-make", target, f"VENV={tmp_path / 'venv'}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.splitlines()


def test_make_run_installs_only_the_runtime_dependencies(tmp_path: Path) -> None:
    installs = [line for line in _make_dry_run("run", tmp_path) if "pip install" in line]

    assert installs, "make run installs nothing"
    assert all("[dev]" not in line for line in installs), installs
    assert any(line.rstrip().endswith("-e .") for line in installs), installs


def test_make_test_still_installs_the_dev_tools(tmp_path: Path) -> None:
    installs = [line for line in _make_dry_run("test", tmp_path) if "pip install" in line]

    assert any("'.[dev]'" in line for line in installs), installs


def test_the_typescript_package_asks_for_the_protobuf_runtime_that_generated_it() -> None:
    lock = json.loads((REPO / "tools/package-lock.json").read_text())
    locked = lock["packages"]["node_modules/@bufbuild/protobuf"]["version"]
    package = json.loads((REPO / "generated/ts/package.json").read_text())

    assert package["peerDependencies"]["@bufbuild/protobuf"] == f"^{locked}"


def test_the_readme_lists_exactly_the_origins_envoy_allows() -> None:
    envoy = (REPO / "envoy/envoy.yaml").read_text()
    block = envoy.split("allow_origin_string_match:", 1)[1]
    allowed = re.findall(r"^\s+- exact: (\S+)", block.split("allow_methods", 1)[0], re.M)
    readme = (REPO / "README.md").read_text()
    listed = re.findall(r"^- `(https?://[^`]+)`$", readme, re.M)

    assert allowed
    assert sorted(listed) == sorted(allowed)
    assert "envoy/envoy.yaml" in readme


def test_the_readme_installs_buf_before_using_it() -> None:
    readme = (REPO / "README.md").read_text()
    block = readme.split("BUF=tools/node_modules/.bin/buf", 1)[0].rsplit("```sh", 1)[1]

    assert "make tools" in block


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("CORTEX_JWT_SECRET", "hunter2-too-short", "hunter2-too-short"),
        ("CORTEX_DATABASE_URL", "postgres://cortex:hunter2@db.invalid/cortex", "hunter2"),
    ],
)
def test_a_rejected_secret_stops_the_start_without_being_echoed(
    tmp_path: Path, name: str, value: str, secret: str
) -> None:
    cortex = Path(sys.executable).with_name("cortex-core")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    env.update({"CORTEX_DATA_DIR": str(tmp_path), name: value})

    result = subprocess.run(
        [str(cortex), "serve"], env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 2
    assert name in result.stderr
    assert secret not in result.stderr + result.stdout
