"""Configuration is read once from CORTEX_* variables and refuses bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_core.settings import Settings, SettingsError


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
