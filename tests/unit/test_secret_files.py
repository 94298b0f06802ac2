"""Every secret setting may come from a file (``<NAME>_FILE``), read once at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cortex_core.cli import main
from cortex_core.settings import Settings, SettingsError

KEY = "file-held-signing-key-" + "k" * 32
SECRET_VARIABLES = [
    ("CORTEX_JWT_SECRET", KEY),
    ("CORTEX_JWT_PREVIOUS_SECRETS", KEY + "," + "o" * 40),
    ("CORTEX_DATABASE_URL", "postgresql+asyncpg://cortex:hunter2@db/cortex"),
    ("CORTEX_REDIS_URL", "redis://default:hunter2@cache:6379/0"),
]


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(("name", "value"), SECRET_VARIABLES)
def test_a_secret_file_gives_the_same_settings_as_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    # A trailing newline, as `echo` and Kubernetes secrets write, is not part of it.
    path = write(tmp_path, "secret", value + "\n")
    from_file = Settings.from_env({name + "_FILE": str(path)})
    assert from_file == Settings.from_env({name: value})


def test_model_api_keys_come_from_files(tmp_path: Path) -> None:
    openai = write(tmp_path, "openai", "sk-from-a-file\n")
    anthropic = write(tmp_path, "anthropic", "ak-from-a-file")
    settings = Settings.from_env(
        {
            "CORTEX_LLM_PROVIDERS": "openai,anthropic",
            "CORTEX_OPENAI_MODEL": "gpt-x",
            "CORTEX_OPENAI_API_KEY_FILE": str(openai),
            "CORTEX_ANTHROPIC_MODEL": "claude-x",
            "CORTEX_ANTHROPIC_API_KEY_FILE": str(anthropic),
        }
    )
    keys = {p.kind: p.api_key for p in settings.llm.providers}
    assert keys == {"openai": "sk-from-a-file", "anthropic": "ak-from-a-file"}


@pytest.mark.parametrize(
    "name",
    [
        "CORTEX_JWT_SECRET",
        "CORTEX_JWT_PREVIOUS_SECRETS",
        "CORTEX_DATABASE_URL",
        "CORTEX_REDIS_URL",
        "CORTEX_OPENAI_API_KEY",
        "CORTEX_ANTHROPIC_API_KEY",
    ],
)
def test_a_variable_and_its_file_together_are_refused_naming_both(
    tmp_path: Path, name: str
) -> None:
    path = write(tmp_path, "secret", KEY)
    environ = {
        name: KEY,
        name + "_FILE": str(path),
        "CORTEX_LLM_PROVIDERS": "openai,anthropic",
        "CORTEX_OPENAI_MODEL": "gpt-x",
        "CORTEX_OPENAI_API_KEY": "sk-x",
        "CORTEX_ANTHROPIC_MODEL": "claude-x",
        "CORTEX_ANTHROPIC_API_KEY": "ak-x",
    }
    environ[name] = KEY
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    assert f"{name} and {name}_FILE are both set" in str(caught.value)
    assert KEY not in str(caught.value)


def test_a_missing_secret_file_names_its_variable_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"CORTEX_JWT_SECRET_FILE": str(missing)})
    assert "CORTEX_JWT_SECRET_FILE" in str(caught.value)
    assert str(missing) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "content", "secret"),
    [
        ("CORTEX_JWT_SECRET", "hunter2-too-short", "hunter2"),
        ("CORTEX_JWT_PREVIOUS_SECRETS", "x" * 40 + ",hunter2-old", "hunter2"),
        ("CORTEX_DATABASE_URL", "mysql://cortex:hunter2@db/cortex", "hunter2"),
        ("CORTEX_REDIS_URL", "hunter2", "hunter2"),
    ],
)
def test_a_rejected_secret_from_a_file_is_never_echoed_in_the_error_or_the_log(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    name: str,
    content: str,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write(tmp_path, "secret", content)
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name + "_FILE": str(path)})
    assert name + "_FILE" in str(caught.value)
    assert secret not in str(caught.value)
    # The whole start, as an operator sees it: exit 2, a line naming the variable.
    monkeypatch.setenv(name + "_FILE", str(path))
    monkeypatch.setenv("CORTEX_DATA_DIR", str(tmp_path / "data"))
    with caplog.at_level(logging.DEBUG):
        assert main(["serve"]) == 2
    seen = capsys.readouterr()
    assert name + "_FILE" in seen.err
    assert secret not in seen.out + seen.err + caplog.text
