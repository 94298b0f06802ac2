"""``cortex-core serve`` as a new user first meets it: what it needs is missing or wrong.

A start that cannot work stops at once with exit code 2 and one line naming the
variable and the address (never a password, never a traceback); what it creates
on disk is for its owner only.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from support.events import free_port
from support.servers import CORTEX, cortex_server


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    return subprocess.run(
        [str(CORTEX), "serve"],
        capture_output=True,
        text=True,
        env={**base, "CORTEX_GRPC_ADDRESS": "127.0.0.1:0", **env},
        timeout=60,
    )


def _the_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("cortex-core: ")]
    return line


def test_an_unreachable_redis_stops_the_start_naming_the_variable_and_address(
    tmp_path: Path,
) -> None:
    port = free_port()
    result = _serve(
        {
            "CORTEX_DATA_DIR": str(tmp_path),
            "CORTEX_REDIS_URL": f"redis://:sesame-pw@127.0.0.1:{port}/0",
        }
    )
    line = _the_line(result)
    assert "CORTEX_REDIS_URL" in line
    assert f"127.0.0.1:{port}" in line
    assert "sesame-pw" not in result.stderr
    assert "serving" not in result.stdout


def test_an_unreachable_database_is_one_line_naming_the_variable_and_address(
    tmp_path: Path,
) -> None:
    port = free_port()
    result = _serve(
        {
            "CORTEX_DATA_DIR": str(tmp_path),
            "CORTEX_DATABASE_URL": f"postgresql+asyncpg://cortex:sesame-pw@127.0.0.1:{port}/cortex",
        }
    )
    line = _the_line(result)
    assert "CORTEX_DATABASE_URL" in line
    assert f"127.0.0.1:{port}" in line
    assert "sesame-pw" not in result.stderr


def test_a_data_dir_that_is_not_a_directory_is_named(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "cortex-data"
    not_a_directory.write_text("a file")
    line = _the_line(_serve({"CORTEX_DATA_DIR": str(not_a_directory)}))
    assert "CORTEX_DATA_DIR" in line
    assert str(not_a_directory) in line


def test_the_data_dir_and_database_file_are_for_their_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "cortex"
    with cortex_server(tmp_path / "logs", {"CORTEX_DATA_DIR": str(data_dir)}) as server:
        assert server.terminate() == 0
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "cortex.db").stat().st_mode) == 0o600
    for extra in ("cortex.db-wal", "cortex.db-shm"):
        if (data_dir / extra).exists():
            assert stat.S_IMODE((data_dir / extra).stat().st_mode) & 0o077 == 0


def test_a_bad_mcp_servers_file_stops_the_start_naming_the_variable_and_the_key(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mcp.toml"
    config.write_text('[servers.search]\nurl = "https://search.internal/mcp"\ntimeout = -1\n')
    result = _serve({"CORTEX_DATA_DIR": str(tmp_path), "CORTEX_MCP_CONFIG": str(config)})
    line = _the_line(result)
    assert "CORTEX_MCP_CONFIG" in line
    assert "servers.search.timeout" in line
