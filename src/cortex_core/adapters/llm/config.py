"""The provider chain, from ``CORTEX_LLM_*`` variables and an optional TOML file.

Variables are read once, at start, through the settings' environment reader
(:class:`Variables`; this module never reads the environment itself). A bad value
raises a ``ValueError`` whose message names the variable or the TOML key
(:class:`LlmConfigError` for what only makes sense together):

The variables and their defaults are listed once, in ``settings.LLM_VARIABLES``.

The TOML file (top-level keys mirror the chain variables, which win over it)::

    order = ["gpt", "vllm", "claude", "local"]
    retries = 2

    [providers.gpt]
    kind = "openai"
    model = "gpt-4o-mini"
    api_key_env = "OPENAI_API_KEY"   # keys stay in the environment, never in the file

    [providers.vllm]
    kind = "openai"
    base_url = "http://gpu-1:8000/v1"
    model = "meta-llama/Llama-3.1-8B-Instruct"

    [providers.claude]
    kind = "anthropic"
    model = "claude-sonnet-4-5"
    api_key_env = "ANTHROPIC_API_KEY"

    [providers.local]
    kind = "local"
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from cortex_core.adapters.llm.anthropic import AnthropicProvider
from cortex_core.adapters.llm.fallback import Backoff, BreakerPolicy, FallbackProvider
from cortex_core.adapters.llm.openai_compatible import OpenAICompatibleProvider, TokenLimitField
from cortex_core.ports import LlmProvider, Metrics

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

T = TypeVar("T")
Kind = Literal["openai", "anthropic", "local"]
_KINDS: tuple[Kind, ...] = ("openai", "anthropic", "local")
_TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")


class LlmConfigError(ValueError):
    """The LLM configuration names a provider or holds a value the server cannot use."""


class Variables(Protocol):
    """The environment, as the settings' reader gives it (``settings.EnvReader``)."""

    def get(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        *,
        secret: bool = False,
        from_file: bool | None = None,
    ) -> T: ...

    def is_set(self, name: str) -> bool: ...


@dataclasses.dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One link of the chain."""

    name: str
    kind: Kind
    model: str = ""
    base_url: str = ""
    api_key: str = dataclasses.field(default="", repr=False)
    timeout: float = 60.0
    token_limit_field: TokenLimitField = "max_tokens"


@dataclasses.dataclass(frozen=True, slots=True)
class LlmConfig:
    providers: tuple[ProviderConfig, ...] = (ProviderConfig("local", "local"),)
    retries: int = 2
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    breaker: BreakerPolicy = dataclasses.field(default_factory=BreakerPolicy)


def load_llm_config(env: Variables) -> LlmConfig:
    """Read and check the configuration (reads the TOML file, builds no client)."""
    path = env.get("CORTEX_LLM_CONFIG", "", str)
    document = _read_toml(path) if path else {}
    where = f"CORTEX_LLM_CONFIG={path!r}"
    file = _Toml(document, where)
    named = _toml_providers(file, env, where)

    order_default = list(file.get("order", list(named) or ["local"], _names))
    order = env.get("CORTEX_LLM_PROVIDERS", order_default, _names)
    providers = []
    for name in order:
        if name in named:
            config, unset = named[name]
            if unset:
                raise LlmConfigError(
                    f"{unset} (named by providers.{name}.api_key_env in {where}) is not set"
                )
            providers.append(config)
        elif name == "openai":
            providers.append(_from_env("openai", env))
        elif name == "anthropic":
            providers.append(_from_env("anthropic", env))
        elif name in ("local", "local-dev"):
            providers.append(ProviderConfig("local", "local"))
        else:
            source = "CORTEX_LLM_PROVIDERS" if env.is_set("CORTEX_LLM_PROVIDERS") else where
            raise LlmConfigError(
                f"{source}: unknown provider {name!r}; expected openai, anthropic, local"
                + (f" or one of {', '.join(named)}" if named else "")
            )
    if len({p.name for p in providers}) != len(providers):
        raise LlmConfigError(f"CORTEX_LLM_PROVIDERS: a provider is named twice in {order}")

    d = LlmConfig()
    retries = env.get("CORTEX_LLM_RETRIES", file.get("retries", d.retries, _count), _count)
    initial = env.get(
        "CORTEX_LLM_BACKOFF", file.get("backoff", d.backoff.initial, _seconds), _seconds
    )
    maximum = env.get(
        "CORTEX_LLM_BACKOFF_MAX", file.get("backoff_max", d.backoff.maximum, _seconds), _seconds
    )
    failures = env.get(
        "CORTEX_LLM_BREAKER_FAILURES",
        file.get("breaker_failures", d.breaker.failure_threshold, _positive),
        _positive,
    )
    reset = env.get(
        "CORTEX_LLM_BREAKER_RESET",
        file.get("breaker_reset", d.breaker.reset_after, _seconds),
        _seconds,
    )
    return LlmConfig(
        providers=tuple(providers),
        retries=retries,
        backoff=Backoff(initial=initial, maximum=max(initial, maximum)),
        breaker=BreakerPolicy(failure_threshold=failures, reset_after=reset),
    )


def chain_from_config(
    config: LlmConfig,
    *,
    local: LlmProvider,
    tracer: Tracer | None = None,
    metrics: Metrics | None = None,
) -> FallbackProvider:
    """Build the clients (no I/O happens until the first request)."""
    providers: list[LlmProvider] = []
    for p in config.providers:
        if p.kind == "openai":
            providers.append(
                OpenAICompatibleProvider(
                    name=p.name,
                    model=p.model,
                    base_url=p.base_url or None,
                    api_key=p.api_key,
                    timeout=p.timeout,
                    token_limit_field=p.token_limit_field,
                )
            )
        elif p.kind == "anthropic":
            providers.append(
                AnthropicProvider(
                    name=p.name,
                    model=p.model,
                    base_url=p.base_url or None,
                    api_key=p.api_key,
                    timeout=p.timeout,
                )
            )
        else:
            providers.append(local)
    return FallbackProvider(
        providers,
        retries=config.retries,
        backoff=config.backoff,
        breaker=config.breaker,
        tracer=tracer,
        metrics=metrics,
    )


def build_chain(env: Variables, *, local: LlmProvider) -> FallbackProvider:
    """The provider chain the environment describes; raise ``ValueError``."""
    return chain_from_config(load_llm_config(env), local=local)


# --- reading -----------------------------------------------------------------------


def _from_env(kind: Literal["openai", "anthropic"], env: Variables) -> ProviderConfig:
    prefix = f"CORTEX_{kind.upper()}_"
    base_url = env.get(prefix + "BASE_URL", "", _url)
    api_key = env.get(prefix + "API_KEY", "", str, secret=True)
    model = env.get(prefix + "MODEL", "", str)
    if not model:
        raise LlmConfigError(f"{prefix}MODEL is required when {kind!r} is in the chain")
    if not api_key and not base_url:
        raise LlmConfigError(
            f"{prefix}API_KEY is required when {kind!r} is in the chain without {prefix}BASE_URL"
        )
    limit: TokenLimitField = "max_tokens"
    if kind == "openai":
        limit = env.get(prefix + "MAX_TOKENS_PARAM", limit, _token_limit_field)
    return ProviderConfig(
        name=kind,
        kind=kind,
        model=model,
        base_url=base_url,
        api_key=api_key,
        timeout=env.get(prefix + "TIMEOUT", 60.0, _seconds),
        token_limit_field=limit,
    )


def _toml_providers(
    file: _Toml, env: Variables, where: str
) -> dict[str, tuple[ProviderConfig, str]]:
    """Every provider of the file, with the unset key variable it names (if any): a
    missing key only stops the start when the chain uses that provider."""
    tables: dict[str, Any] = file.get("providers", {}, _table)
    return {name: _toml_provider(name, raw, env, where) for name, raw in tables.items()}


def _toml_provider(
    name: str, raw: object, env: Variables, where: str
) -> tuple[ProviderConfig, str]:
    here = f"{where}: providers.{name}"
    if not isinstance(raw, dict):
        raise LlmConfigError(f"{here} must be a table")
    entry = _Toml(raw, here)
    if "api_key" in raw:
        raise LlmConfigError(
            f"{here}.api_key is not read; keep the key in an environment variable "
            "and name it with api_key_env"
        )
    unknown = set(raw) - {"kind", "model", "base_url", "api_key_env", "timeout", "max_tokens_param"}
    if unknown:
        raise LlmConfigError(f"{here} has unknown keys {sorted(unknown)}")
    if "kind" not in raw:
        raise LlmConfigError(f"{here}.kind is required")
    kind: Kind = entry.get("kind", "local", _kind)
    if kind == "local":
        return ProviderConfig("local", "local"), ""
    model = entry.get("model", "", _text)
    base_url = entry.get("base_url", "", _url)
    key_env = entry.get("api_key_env", "", _text)
    api_key = env.get(key_env, "", str, secret=True) if key_env else ""
    if not model:
        raise LlmConfigError(f"{here}.model is required")
    if not key_env and not base_url:
        raise LlmConfigError(f"{here} needs api_key_env unless base_url is set")
    config = ProviderConfig(
        name=name,
        kind=kind,
        model=model,
        base_url=base_url,
        api_key=api_key,
        timeout=entry.get("timeout", 60.0, _seconds),
        token_limit_field=entry.get("max_tokens_param", "max_tokens", _token_limit_field),
    )
    return config, key_env if key_env and not api_key else ""


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise LlmConfigError(f"CORTEX_LLM_CONFIG={path!r} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LlmConfigError(f"CORTEX_LLM_CONFIG={path!r} is not valid TOML: {exc}") from None


class _Toml:
    def __init__(self, document: Mapping[str, Any], where: str) -> None:
        self._document = document
        self._where = where

    def get(self, key: str, default: T, parse: Callable[[Any], T]) -> T:
        if key not in self._document:
            return default
        try:
            return parse(self._document[key])
        except (TypeError, ValueError) as exc:
            raise LlmConfigError(f"{self._where}: {key} is invalid: {exc}") from None


def _names(raw: object) -> list[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a list of provider names")
    names = [i.strip() for i in items if i.strip()]
    if not names:
        raise ValueError("expected at least one provider name")
    return names


def _table(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError("expected a table")
    return raw


def _kind(raw: object) -> Kind:
    if raw == "openai" or raw == "anthropic" or raw == "local":
        return raw
    raise ValueError(f"expected one of {', '.join(_KINDS)}")


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


def _url(raw: object) -> str:
    url = _text(raw)
    if not url.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return url


def _token_limit_field(raw: object) -> TokenLimitField:
    if raw not in _TOKEN_LIMIT_FIELDS:
        raise ValueError(f"expected one of {', '.join(_TOKEN_LIMIT_FIELDS)}")
    return cast(TokenLimitField, raw)


def _seconds(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number of seconds")
    value = float(cast(str, raw))
    if not value > 0:
        raise ValueError("expected a number greater than 0")
    return value


def _count(raw: object) -> int:
    value = _integer(raw)
    if value < 0:
        raise ValueError("expected a whole number of 0 or more")
    return value


def _positive(raw: object) -> int:
    value = _integer(raw)
    if value <= 0:
        raise ValueError("expected a whole number greater than 0")
    return value


def _integer(raw: object) -> int:
    if isinstance(raw, bool | float):
        raise ValueError("expected a whole number")
    return int(cast(str, raw))


__all__ = [
    "LlmConfig",
    "LlmConfigError",
    "ProviderConfig",
    "Variables",
    "build_chain",
    "chain_from_config",
    "load_llm_config",
]
