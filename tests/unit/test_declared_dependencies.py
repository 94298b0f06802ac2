"""Every third-party package the server imports is declared in pyproject, and
nothing imports the old ``httpx`` (the SDKs, mcp and Cortex share ``httpx2``)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"cortex_core", "support", "bench", "cortex_betterproto"}
#: Packages of the client distribution in clients/python (installed editable, so the
#: installed metadata does not map them to it).
CLIENT_PACKAGES = {"cortex": "cortex-core-client", "cortex_client": "cortex-core-client"}


def _imported(tree: Path) -> dict[str, Path]:
    """Top-level module name → one file that imports it (absolute imports only)."""
    found: dict[str, Path] = {}
    for path in sorted(tree.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def _declared(pyproject: Path = ROOT / "pyproject.toml") -> set[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"]
    return {_normal(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_package_src_imports_is_a_declared_dependency() -> None:
    providers = importlib.metadata.packages_distributions()
    declared = _declared()
    third_party = {
        name: path
        for name, path in _imported(ROOT / "src").items()
        if name not in sys.stdlib_module_names and name not in FIRST_PARTY | {"__future__"}
    }

    undeclared = {
        name: str(path.relative_to(ROOT))
        for name, path in third_party.items()
        if not {_normal(d) for d in providers.get(name, [CLIENT_PACKAGES.get(name, name)])}
        & declared
    }

    assert "httpx2" in third_party  # the adapters use it: it must be declared itself
    assert {"cortex", "cortex_client"} <= set(third_party)  # from clients/python
    assert undeclared == {}


def test_the_client_distribution_imports_only_its_own_four_dependencies() -> None:
    client = ROOT / "clients" / "python"
    providers = importlib.metadata.packages_distributions()
    imported = {
        name: path
        for name, path in _imported(client / "src").items()
        if name not in sys.stdlib_module_names | set(CLIENT_PACKAGES) | {"__future__"}
    }

    distributions = {_normal(d) for name in imported for d in providers.get(name, [name])}

    assert _declared(client / "pyproject.toml") == {
        "grpcio",
        "grpcio-status",
        "protobuf",
        "googleapis-common-protos",
    }
    assert distributions <= _declared(client / "pyproject.toml"), imported


def test_nothing_imports_the_old_httpx() -> None:
    users = {
        str(path.relative_to(ROOT))
        for tree in ("src", "tests", "bench")
        for name, path in _imported(ROOT / tree).items()
        if name == "httpx"
    }

    assert users == set()
