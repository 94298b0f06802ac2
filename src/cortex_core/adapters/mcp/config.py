"""The MCP servers Cortex takes tools from: a TOML file named by ``CORTEX_MCP_CONFIG``.

Read once, at start, by the settings (``Settings.mcp_config``); this module reads the
file and checks every key, and builds nothing. A bad file or value raises
:class:`McpConfigError` (a ``ValueError``) whose message names the key
(``servers.search.timeout``), which the settings' reader prefixes with the variable,
so the start stops with exit status 2. The keys are documented in docs/tools.md::

    [servers.search]                  # tools are `search.<name>`
    url = "https://search.internal/mcp"   # Streamable HTTP ...
    headers = { Authorization = "Bearer ..." }
    timeout = 20                      # seconds per call (default 30)

    [servers.files]
    command = "npx"                   # ... or stdio: a command Cortex starts and owns
    args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/shared"]
    env = { LOG_LEVEL = "warn" }
    tools = ["read_file", "list_directory", "write_file"]   # expose only these
    require_approval = ["write_file"] # or true: every tool of the server
    idempotent = ["read_file", "list_directory"]
    tool_timeouts = { read_file = 5 }
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar, cast

from cortex_core.domain.tools import BUILTIN_SERVER, DEFAULT_TIMEOUT

T = TypeVar("T")
Mode = Literal["auto", "legacy"]
_MODES: tuple[Mode, ...] = ("auto", "legacy")
_SERVER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")  # the `<server>` of `<server>.<tool>`
_KEYS = {
    "command",
    "args",
    "env",
    "cwd",
    "url",
    "headers",
    "timeout",
    "connect_timeout",
    "probe_interval",
    "tools",
    "require_approval",
    "idempotent",
    "tool_timeouts",
    "mode",
}
DEFAULT_CONNECT_TIMEOUT = 15.0
DEFAULT_PROBE_INTERVAL = 30.0
_NO_APPROVAL: bool | frozenset[str] = False


class McpConfigError(ValueError):
    """The MCP configuration file cannot be read or holds a value Cortex cannot use."""


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class McpServerConfig:
    """One ``[servers.<name>]`` table: a stdio server (``command``) or a Streamable
    HTTP one (``url``), and what Cortex exposes of its tools."""

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=_empty)
    cwd: str = ""
    url: str = ""
    headers: Mapping[str, str] = dataclasses.field(default_factory=_empty, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    probe_interval: float = DEFAULT_PROBE_INTERVAL
    tools: frozenset[str] | None = None  # None: every tool the server lists
    require_approval: bool | frozenset[str] = False
    idempotent: frozenset[str] = frozenset()
    tool_timeouts: Mapping[str, float] = dataclasses.field(default_factory=_empty)
    mode: Mode = "auto"

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command else "http"

    def exposes(self, tool: str) -> bool:
        return self.tools is None or tool in self.tools

    def needs_approval(self, tool: str) -> bool:
        if isinstance(self.require_approval, bool):
            return self.require_approval
        return tool in self.require_approval

    def timeout_of(self, tool: str) -> float:
        return self.tool_timeouts.get(tool, self.timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class McpConfig:
    servers: tuple[McpServerConfig, ...] = ()


def load_mcp_config(path: str) -> McpConfig:
    """Read and check the file at ``path``; raise :class:`McpConfigError`."""
    try:
        with Path(path).open("rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise McpConfigError(f"cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise McpConfigError(f"is not valid TOML: {exc}") from None
    return parse_mcp_config(document)


def parse_mcp_config(document: Mapping[str, Any]) -> McpConfig:
    unknown = set(document) - {"servers"}
    if unknown:
        raise McpConfigError(f"unknown top-level keys {sorted(unknown)}; expected [servers.<name>]")
    servers = document.get("servers", {})
    if not isinstance(servers, dict):
        raise McpConfigError("servers must be a table of [servers.<name>] tables")
    return McpConfig(tuple(_server(name, raw) for name, raw in servers.items()))


def _server(name: str, raw: object) -> McpServerConfig:
    here = f"servers.{name}"
    if not _SERVER_NAME.match(name) or name == BUILTIN_SERVER:
        raise McpConfigError(
            f"{here}: the name must be lower-case letters, digits and '-', starting with a"
            f" letter, and not {BUILTIN_SERVER!r} (the built-in tools)"
        )
    if not isinstance(raw, dict):
        raise McpConfigError(f"{here} must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise McpConfigError(f"{here} has unknown keys {sorted(unknown)}")
    if ("command" in raw) == ("url" in raw):
        raise McpConfigError(
            f"{here} needs exactly one of command (stdio) or url (Streamable HTTP)"
        )
    key = _Keys(raw, here)
    stdio_only = {"args", "env", "cwd"} & set(raw) if "url" in raw else set()
    http_only = {"headers"} & set(raw) if "command" in raw else set()
    if stdio_only or http_only:
        wrong = sorted(stdio_only | http_only)
        raise McpConfigError(f"{here}: {', '.join(wrong)} do not apply to this transport")
    return McpServerConfig(
        name=name,
        command=key.get("command", "", _text),
        args=tuple(key.get("args", [], _texts)),
        env=MappingProxyType(key.get("env", {}, _text_table)),
        cwd=key.get("cwd", "", _text),
        url=key.get("url", "", _url),
        headers=MappingProxyType(key.get("headers", {}, _text_table)),
        timeout=key.get("timeout", DEFAULT_TIMEOUT, _seconds),
        connect_timeout=key.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT, _seconds),
        probe_interval=key.get("probe_interval", DEFAULT_PROBE_INTERVAL, _seconds),
        tools=key.get("tools", None, _names),
        require_approval=key.get("require_approval", _NO_APPROVAL, _approval),
        idempotent=key.get("idempotent", frozenset(), _names),
        tool_timeouts=MappingProxyType(key.get("tool_timeouts", {}, _seconds_table)),
        mode=key.get("mode", "auto", _mode),
    )


class _Keys:
    def __init__(self, table: Mapping[str, Any], where: str) -> None:
        self._table = table
        self._where = where

    def get(self, key: str, default: T, parse: Callable[[Any], T]) -> T:
        if key not in self._table:
            return default
        try:
            return parse(self._table[key])
        except (TypeError, ValueError) as exc:
            raise McpConfigError(f"{self._where}.{key} is invalid: {exc}") from None


def _text(raw: object) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("expected a non-empty string")
    return raw


def _texts(raw: object) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(item, str) and item for item in raw):
        raise ValueError("expected a list of non-empty strings")
    return cast(list[str], raw)


def _names(raw: object) -> frozenset[str]:
    return frozenset(_texts(raw))


def _text_table(raw: object) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError("expected a table of strings")
    return cast(dict[str, str], raw)


def _url(raw: object) -> str:
    url = _text(raw)
    if not url.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return url


def _seconds(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("expected a number of seconds")
    value = float(raw)
    if not 0 < value < math.inf:
        raise ValueError("expected a number of seconds greater than 0")
    return value


def _seconds_table(raw: object) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise ValueError("expected a table of tool name = seconds")
    return {str(name): _seconds(value) for name, value in raw.items()}


def _approval(raw: object) -> bool | frozenset[str]:
    if isinstance(raw, bool):
        return raw
    try:
        return frozenset(_texts(raw))
    except ValueError:
        raise ValueError("expected true, false or a list of tool names") from None


def _mode(raw: object) -> Mode:
    if raw == "auto" or raw == "legacy":
        return raw
    raise ValueError(f"expected one of {', '.join(_MODES)}")
