"""``CORTEX_MCP_CONFIG``: the MCP servers file, read once at start, every key checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_core.settings import Settings, SettingsError

GOOD = """
[servers.search]
url = "https://search.internal/mcp"
headers = { Authorization = "Bearer secret-token" }
timeout = 20

[servers.files]
command = "npx"
args = ["-y", "server-filesystem", "/srv"]
env = { LOG_LEVEL = "warn" }
tools = ["read_file", "write_file"]
require_approval = ["write_file"]
idempotent = ["read_file"]
tool_timeouts = { read_file = 5 }
mode = "legacy"
"""


def _settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "mcp.toml"
    path.write_text(text)
    return Settings.from_env({"CORTEX_MCP_CONFIG": str(path)})


def test_no_file_means_built_in_tools_only() -> None:
    assert Settings.from_env({}).mcp_config.servers == ()


def test_every_key_of_a_server_table_is_read(tmp_path: Path) -> None:
    search, files = _settings(tmp_path, GOOD).mcp_config.servers
    assert (search.name, search.transport, search.url, search.timeout) == (
        "search", "http", "https://search.internal/mcp", 20.0,
    )  # fmt: skip
    assert search.headers == {"Authorization": "Bearer secret-token"}
    assert "secret-token" not in repr(search)
    assert search.exposes("anything")
    assert not search.needs_approval("anything")
    assert (files.transport, files.command, files.args) == (
        "stdio",
        "npx",
        ("-y", "server-filesystem", "/srv"),
    )
    assert files.exposes("read_file")
    assert not files.exposes("delete_file")
    assert files.needs_approval("write_file")
    assert not files.needs_approval("read_file")
    assert files.idempotent == {"read_file"}
    assert (files.timeout_of("read_file"), files.timeout_of("write_file")) == (5.0, 30.0)
    assert files.mode == "legacy"


def test_require_approval_true_covers_every_tool(tmp_path: Path) -> None:
    (server,) = _settings(
        tmp_path, '[servers.a]\nurl = "http://x/mcp"\nrequire_approval = true\n'
    ).mcp_config.servers
    assert server.needs_approval("whatever")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[servers.a]\nurl = "http://x/mcp"\ntimeout = 0\n', "servers.a.timeout"),
        ('[servers.a]\nurl = "http://x/mcp"\ntimeout = "soon"\n', "servers.a.timeout"),
        ('[servers.a]\nurl = "ftp://x"\n', "servers.a.url"),
        ('[servers.a]\ncommand = "x"\nurl = "http://x/mcp"\n', "servers.a"),
        ("[servers.a]\nargs = []\n", "servers.a"),
        ('[servers.a]\ncommand = "x"\nheaders = { A = "b" }\n', "servers.a"),
        ('[servers.a]\ncommand = "x"\nretries = 3\n', "servers.a"),
        ('[servers.a]\ncommand = "x"\nrequire_approval = "yes"\n', "servers.a.require_approval"),
        ('[servers.a]\ncommand = "x"\ntools = "read_file"\n', "servers.a.tools"),
        ('[servers.a]\ncommand = "x"\nmode = "modern"\n', "servers.a.mode"),
        ('[servers.cortex]\ncommand = "x"\n', "servers.cortex"),
        ('[servers.Bad_Name]\ncommand = "x"\n', "servers.Bad_Name"),
        ('[server.a]\ncommand = "x"\n', "server"),
        ("[servers.a\n", "not valid TOML"),
    ],
)
def test_a_bad_file_stops_the_start_naming_the_variable_and_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        _settings(tmp_path, text)
    assert str(caught.value).startswith("CORTEX_MCP_CONFIG=")
    assert key in str(caught.value)


def test_a_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"CORTEX_MCP_CONFIG=.*cannot be read"):
        Settings.from_env({"CORTEX_MCP_CONFIG": str(tmp_path / "absent.toml")})
