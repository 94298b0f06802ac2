"""Configuration is read once from CORTEX_* variables and refuses bad values."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from cortex_core.cli import build_parser
from cortex_core.settings import VARIABLES, Settings, SettingsError, markdown_table


def test_defaults_are_the_embedded_setup() -> None:
    settings = Settings.from_env({})
    assert settings.grpc_address == "127.0.0.1:50051"
    assert settings.data_dir == Path(".cortex")
    assert settings.redis_url == ""
    assert settings.log_format == "json"
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.effective_database_url.endswith("/.cortex/cortex.db")


def test_every_documented_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "CORTEX_GRPC_ADDRESS": "0.0.0.0:6000",
            "CORTEX_DATA_DIR": "/var/lib/cortex",
            "CORTEX_DATABASE_URL": "postgresql+asyncpg://cortex@db/cortex",
            "CORTEX_REDIS_URL": "redis://cache:6379/0",
            "CORTEX_LOG_LEVEL": "debug",
            "CORTEX_LOG_FORMAT": "console",
            "CORTEX_SHUTDOWN_GRACE": "2.5",
            "CORTEX_TRACING": "true",
            "CORTEX_MAX_ACTIVE_REPLIES": "40",
        }
    )
    assert settings.grpc_address == "0.0.0.0:6000"
    assert settings.data_dir == Path("/var/lib/cortex")
    assert settings.effective_database_url == "postgresql+asyncpg://cortex@db/cortex"
    assert settings.redis_url == "redis://cache:6379/0"
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "console"
    assert settings.shutdown_grace == 2.5
    assert settings.tracing is True
    assert settings.max_active_replies == 40


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CORTEX_GRPC_ADDRESS", "localhost"),
        ("CORTEX_GRPC_ADDRESS", "localhost:99999"),
        ("CORTEX_DATABASE_URL", "postgresql://sync-driver/db"),
        ("CORTEX_REDIS_URL", "http://cache"),
        ("CORTEX_LOG_LEVEL", "LOUD"),
        ("CORTEX_LOG_FORMAT", "yaml"),
        ("CORTEX_SHUTDOWN_GRACE", "soon"),
        ("CORTEX_MAX_MESSAGE_BYTES", "0"),
        ("CORTEX_TRACING", "maybe"),
        ("CORTEX_MAX_ACTIVE_REPLIES", "0"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_settings_cannot_be_changed_after_start() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.grpc_address = "0.0.0.0:1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("CORTEX_JWT_SECRET", "hunter2-is-my-signing-key", "hunter2-is-my-signing-key"),
        ("CORTEX_JWT_PREVIOUS_SECRETS", "x" * 40 + ",hunter2-old", "hunter2-old"),
        ("CORTEX_DATABASE_URL", "postgresql://cortex:hunter2@db/cortex", "hunter2"),
        ("CORTEX_REDIS_URL", "http://default:hunter2@cache:6379", "hunter2"),
    ],
)
def test_a_rejected_secret_is_never_echoed(name: str, value: str, secret: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert name in str(caught.value)
    assert secret not in str(caught.value)


def test_redis_connections_are_bounded_by_settings() -> None:
    settings = Settings.from_env(
        {"CORTEX_REDIS_MAX_CONNECTIONS": "7", "CORTEX_REDIS_TIMEOUT": "0.5"}
    )
    assert (settings.redis_max_connections, settings.redis_timeout) == (7, 0.5)
    with pytest.raises(SettingsError, match="CORTEX_REDIS_MAX_CONNECTIONS"):
        Settings.from_env({"CORTEX_REDIS_MAX_CONNECTIONS": "0"})


def test_the_readme_configuration_table_is_the_settings_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(CORTEX_[A-Z0-9_]+)`", section, flags=re.MULTILINE))
    assert documented == {v.name for v in VARIABLES}
    assert markdown_table() in section, "regenerate it with: python -m cortex_core.settings"


def test_cortex_core_help_lists_every_variable_with_its_default() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for variable in VARIABLES:
        assert f"{variable.name} {' '.join(variable.help.split())}" in help_text
        assert variable.default in help_text
    fields = {
        f"CORTEX_{f.name.upper()}"
        for f in dataclasses.fields(Settings)
        if f.name not in ("llm", "experts")
    }
    assert fields <= {v.name for v in VARIABLES}
