"""The provider chain comes from CORTEX_LLM_* variables or a TOML file, and bad values
stop the start with a message that names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_core.adapters.llm.anthropic import AnthropicProvider
from cortex_core.adapters.llm.config import (
    LlmConfigError,
    ProviderConfig,
    build_chain,
    load_llm_config,
)
from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.adapters.llm.openai_compatible import OpenAICompatibleProvider
from cortex_core.settings import EnvReader

LOCAL = LocalDevelopmentProvider()
OPENAI = {"CORTEX_OPENAI_API_KEY": "sk-1", "CORTEX_OPENAI_MODEL": "gpt-4o-mini"}
ANTHROPIC = {"CORTEX_ANTHROPIC_API_KEY": "ak-1", "CORTEX_ANTHROPIC_MODEL": "claude-x"}


async def test_without_configuration_the_chain_is_the_local_provider_alone() -> None:
    chain = build_chain(EnvReader({}), local=LOCAL)

    assert chain.providers == (LOCAL,)
    assert (chain.name, chain.model) == ("local-dev", "cortex-local-dev")
    assert chain.states() == {"local-dev": "closed"}


async def test_providers_are_chained_in_the_order_named_each_from_its_own_variables() -> None:
    env = {"CORTEX_LLM_PROVIDERS": "anthropic, openai,local", **OPENAI, **ANTHROPIC}
    env["CORTEX_OPENAI_BASE_URL"] = "http://vllm:8000/v1"
    env["CORTEX_OPENAI_MAX_TOKENS_PARAM"] = "max_completion_tokens"

    chain = build_chain(EnvReader(env), local=LOCAL)
    config = load_llm_config(EnvReader(env))

    anthropic, openai, local = chain.providers
    assert isinstance(anthropic, AnthropicProvider)
    assert isinstance(openai, OpenAICompatibleProvider)
    assert local is LOCAL
    assert [(p.name, p.model) for p in chain.providers] == [
        ("anthropic", "claude-x"),
        ("openai", "gpt-4o-mini"),
        ("local-dev", "cortex-local-dev"),
    ]
    assert config.providers[1] == ProviderConfig(
        name="openai",
        kind="openai",
        model="gpt-4o-mini",
        base_url="http://vllm:8000/v1",
        api_key="sk-1",
        token_limit_field="max_completion_tokens",
    )
    await chain.aclose()


def test_retries_backoff_and_breaker_are_tunable() -> None:
    config = load_llm_config(
        EnvReader(
            {
                "CORTEX_LLM_RETRIES": "0",
                "CORTEX_LLM_BACKOFF": "0.5",
                "CORTEX_LLM_BACKOFF_MAX": "8",
                "CORTEX_LLM_BREAKER_FAILURES": "3",
                "CORTEX_LLM_BREAKER_RESET": "12.5",
            }
        )
    )

    assert config.retries == 0
    assert (config.backoff.initial, config.backoff.maximum) == (0.5, 8.0)
    assert (config.breaker.failure_threshold, config.breaker.reset_after) == (3, 12.5)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CORTEX_LLM_PROVIDERS": "openai"}, "CORTEX_OPENAI_MODEL"),
        ({"CORTEX_LLM_PROVIDERS": "openai", "CORTEX_OPENAI_MODEL": "m"}, "CORTEX_OPENAI_API_KEY"),
        ({"CORTEX_LLM_PROVIDERS": "anthropic", **OPENAI}, "CORTEX_ANTHROPIC_MODEL"),
        ({"CORTEX_LLM_PROVIDERS": "openai,gemini", **OPENAI}, "CORTEX_LLM_PROVIDERS"),
        ({"CORTEX_LLM_PROVIDERS": "openai,openai", **OPENAI}, "CORTEX_LLM_PROVIDERS"),
        ({"CORTEX_LLM_PROVIDERS": " , "}, "CORTEX_LLM_PROVIDERS"),
        ({"CORTEX_LLM_RETRIES": "-1"}, "CORTEX_LLM_RETRIES"),
        ({"CORTEX_LLM_BREAKER_FAILURES": "0"}, "CORTEX_LLM_BREAKER_FAILURES"),
        ({"CORTEX_LLM_BACKOFF": "soon"}, "CORTEX_LLM_BACKOFF"),
        (
            {"CORTEX_LLM_PROVIDERS": "openai", **OPENAI, "CORTEX_OPENAI_TIMEOUT": "0"},
            "CORTEX_OPENAI_TIMEOUT",
        ),
        (
            {"CORTEX_LLM_PROVIDERS": "openai", **OPENAI, "CORTEX_OPENAI_BASE_URL": "vllm:8000"},
            "CORTEX_OPENAI_BASE_URL",
        ),
        (
            {"CORTEX_LLM_PROVIDERS": "openai", **OPENAI, "CORTEX_OPENAI_MAX_TOKENS_PARAM": "x"},
            "CORTEX_OPENAI_MAX_TOKENS_PARAM",
        ),
        ({"CORTEX_LLM_CONFIG": "/nonexistent/llm.toml"}, "CORTEX_LLM_CONFIG"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build_chain(EnvReader(env), local=LOCAL)


async def test_a_local_server_needs_no_key() -> None:
    env = {
        "CORTEX_LLM_PROVIDERS": "openai",
        "CORTEX_OPENAI_BASE_URL": "http://127.0.0.1:11434/v1",
        "CORTEX_OPENAI_MODEL": "llama3.2",
    }

    chain = build_chain(EnvReader(env), local=LOCAL)

    assert chain.name == "openai"
    await chain.aclose()


def test_keys_never_appear_in_the_configurations_repr() -> None:
    config = load_llm_config(EnvReader({"CORTEX_LLM_PROVIDERS": "openai", **OPENAI}))

    assert "sk-1" not in repr(config)


TOML = """
order = ["gpt", "vllm", "claude", "dev"]
retries = 1
breaker_failures = 4

[providers.gpt]
kind = "openai"
model = "gpt-4o-mini"
api_key_env = "MY_OPENAI_KEY"

[providers.vllm]
kind = "openai"
base_url = "http://gpu-1:8000/v1"
model = "llama"
timeout = 120

[providers.claude]
kind = "anthropic"
model = "claude-x"
api_key_env = "MY_ANTHROPIC_KEY"

[providers.dev]
kind = "local"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "llm.toml"
    path.write_text(text)
    return str(path)


async def test_a_toml_file_chains_several_endpoints_of_one_kind(tmp_path: Path) -> None:
    env = {
        "CORTEX_LLM_CONFIG": write(tmp_path, TOML),
        "MY_OPENAI_KEY": "sk-file",
        "MY_ANTHROPIC_KEY": "ak-file",
    }

    chain = build_chain(EnvReader(env), local=LOCAL)
    config = load_llm_config(EnvReader(env))

    assert [(p.name, p.model) for p in chain.providers] == [
        ("gpt", "gpt-4o-mini"),
        ("vllm", "llama"),
        ("claude", "claude-x"),
        ("local-dev", "cortex-local-dev"),
    ]
    assert config.providers[0].api_key == "sk-file"
    assert config.providers[1].timeout == 120.0
    assert config.retries == 1
    assert config.breaker.failure_threshold == 4
    await chain.aclose()


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env = {
        "CORTEX_LLM_CONFIG": write(tmp_path, TOML),
        "CORTEX_LLM_PROVIDERS": "vllm,anthropic",
        "CORTEX_LLM_RETRIES": "3",
        **ANTHROPIC,
    }

    config = load_llm_config(EnvReader(env))

    assert [p.name for p in config.providers] == ["vllm", "anthropic"]
    assert config.retries == 3


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("order = [", "CORTEX_LLM_CONFIG"),
        ('[providers.x]\nkind = "openai"\nmodel = "m"\napi_key = "sk"\n', "api_key_env"),
        ('[providers.x]\nkind = "openai"\nmodel = "m"\napi_key_env = "UNSET_KEY"\n', "UNSET_KEY"),
        ('[providers.x]\nkind = "gemini"\n', "providers.x: kind"),
        ('[providers.x]\nmodel = "m"\n', "providers.x.kind"),
        ('[providers.x]\nkind = "anthropic"\nbase_url = "http://p"\n', "providers.x.model"),
        ('[providers.x]\nkind = "local"\ncolour = "red"\n', "unknown keys"),
        ('order = ["nope"]\n[providers.x]\nkind = "local"\n', "nope"),
        ("retries = 1.5\n", "retries"),
    ],
)
def test_a_bad_file_stops_the_start_naming_the_file_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(LlmConfigError, match=named) as caught:
        load_llm_config(EnvReader({"CORTEX_LLM_CONFIG": write(tmp_path, text)}))

    assert "llm.toml" in str(caught.value) or named == "UNSET_KEY"
