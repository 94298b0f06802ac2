"""Typed configuration read once from ``CORTEX_*`` environment variables.

``Settings.from_env`` is called exactly once, by the CLI, before anything else
starts. A malformed value raises :class:`SettingsError` whose message names the
offending variable, so a bad deployment stops at start instead of misbehaving later.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from cortex_core.adapters.llm.config import LlmConfig, LlmConfigError, load_llm_config

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("json", "console")


class SettingsError(ValueError):
    """A ``CORTEX_*`` variable has a value the server cannot use."""


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the server. Field ``x`` is read from ``CORTEX_X``."""

    grpc_address: str = "127.0.0.1:50051"
    data_dir: Path = Path(".cortex")
    database_url: str = ""
    redis_url: str = ""
    log_level: str = "INFO"
    log_format: str = "json"
    shutdown_grace: float = 10.0
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 0
    max_pending_requests: int = 1000
    tracing: bool = False
    access_log: bool = True
    jwt_secret: str = dataclasses.field(default="", repr=False)
    jwt_previous_secrets: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    access_token_ttl: float = 900.0
    session_lifetime: float = 30 * 24 * 3600.0
    password_workers: int = 0
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    events_heartbeat: float = 15.0
    events_retention: float = 24 * 3600.0
    events_max_length: int = 10_000
    events_queue_size: int = 256
    context_budget: int = 8192
    local_llm_delay: float = 0.0
    llm: LlmConfig = dataclasses.field(default_factory=LlmConfig)
    memory_sweep_interval: float = 60.0
    trusted_proxies: tuple[IPNetwork, ...] = ()
    login_account_attempts: int = 5
    login_address_attempts: int = 50
    register_address_attempts: int = 100

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cortex.db').resolve()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise :class:`SettingsError`."""
        reader = _Reader(environ)
        d = cls()
        return cls(
            grpc_address=reader.get("CORTEX_GRPC_ADDRESS", d.grpc_address, _address),
            data_dir=reader.get("CORTEX_DATA_DIR", d.data_dir, Path),
            database_url=reader.get("CORTEX_DATABASE_URL", d.database_url, _database_url),
            redis_url=reader.get("CORTEX_REDIS_URL", d.redis_url, _redis_url),
            log_level=reader.get("CORTEX_LOG_LEVEL", d.log_level, _one_of(_LOG_LEVELS)),
            log_format=reader.get("CORTEX_LOG_FORMAT", d.log_format, _one_of(_LOG_FORMATS)),
            shutdown_grace=reader.get("CORTEX_SHUTDOWN_GRACE", d.shutdown_grace, _positive_float),
            max_message_bytes=reader.get(
                "CORTEX_MAX_MESSAGE_BYTES", d.max_message_bytes, _positive_int
            ),
            max_concurrent_rpcs=reader.get(
                "CORTEX_MAX_CONCURRENT_RPCS", d.max_concurrent_rpcs, _non_negative_int
            ),
            max_pending_requests=reader.get(
                "CORTEX_MAX_PENDING_REQUESTS", d.max_pending_requests, _positive_int
            ),
            tracing=reader.get("CORTEX_TRACING", d.tracing, _boolean),
            access_log=reader.get("CORTEX_ACCESS_LOG", d.access_log, _boolean),
            jwt_secret=reader.get("CORTEX_JWT_SECRET", d.jwt_secret, _secret),
            jwt_previous_secrets=reader.get(
                "CORTEX_JWT_PREVIOUS_SECRETS", d.jwt_previous_secrets, _secrets
            ),
            access_token_ttl=reader.get(
                "CORTEX_ACCESS_TOKEN_TTL", d.access_token_ttl, _positive_float
            ),
            session_lifetime=reader.get(
                "CORTEX_SESSION_LIFETIME", d.session_lifetime, _positive_float
            ),
            password_workers=reader.get(
                "CORTEX_PASSWORD_WORKERS", d.password_workers, _non_negative_int
            ),
            argon2_memory_kib=reader.get(
                "CORTEX_ARGON2_MEMORY_KIB", d.argon2_memory_kib, _at_least(19 * 1024)
            ),
            argon2_time_cost=reader.get(
                "CORTEX_ARGON2_TIME_COST", d.argon2_time_cost, _at_least(2)
            ),
            events_heartbeat=reader.get(
                "CORTEX_EVENTS_HEARTBEAT", d.events_heartbeat, _positive_float
            ),
            events_retention=reader.get(
                "CORTEX_EVENTS_RETENTION", d.events_retention, _positive_float
            ),
            events_max_length=reader.get(
                "CORTEX_EVENTS_MAX_LENGTH", d.events_max_length, _positive_int
            ),
            events_queue_size=reader.get(
                "CORTEX_EVENTS_QUEUE_SIZE", d.events_queue_size, _positive_int
            ),
            context_budget=reader.get("CORTEX_CONTEXT_BUDGET", d.context_budget, _positive_int),
            local_llm_delay=reader.get(
                "CORTEX_LOCAL_LLM_DELAY", d.local_llm_delay, _non_negative_float
            ),
            llm=_llm(environ),
            memory_sweep_interval=reader.get(
                "CORTEX_MEMORY_SWEEP_INTERVAL", d.memory_sweep_interval, _positive_float
            ),
            trusted_proxies=reader.get("CORTEX_TRUSTED_PROXIES", d.trusted_proxies, _networks),
            login_account_attempts=reader.get(
                "CORTEX_LOGIN_ACCOUNT_ATTEMPTS", d.login_account_attempts, _positive_int
            ),
            login_address_attempts=reader.get(
                "CORTEX_LOGIN_ADDRESS_ATTEMPTS", d.login_address_attempts, _positive_int
            ),
            register_address_attempts=reader.get(
                "CORTEX_REGISTER_ADDRESS_ATTEMPTS", d.register_address_attempts, _positive_int
            ),
        )

    @property
    def python_log_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self._environ.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            raise SettingsError(f"{name}={raw!r} is invalid: {exc}") from None


def _llm(environ: Mapping[str, str]) -> LlmConfig:
    try:
        return load_llm_config(environ)
    except LlmConfigError as exc:
        raise SettingsError(str(exc)) from None


def _address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535")
    return raw


def _database_url(raw: str) -> str:
    if not raw.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ValueError("expected a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    return raw


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.upper() if choices is _LOG_LEVELS else raw.lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _secret(raw: str) -> str:
    if len(raw.encode()) < 32:
        raise ValueError("must be at least 32 bytes (use e.g. `openssl rand -base64 48`)")
    return raw


def _secrets(raw: str) -> tuple[str, ...]:
    return tuple(_secret(part.strip()) for part in raw.split(",") if part.strip())


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if value < minimum:
            raise ValueError(f"must be at least {minimum} (the OWASP minimum)")
        return value

    return parse


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("expected a number greater than 0")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise ValueError("expected a number of 0 or more")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a whole number greater than 0")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number of 0 or more")
    return value


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs or single addresses (``10.0.0.0/8,::1``)."""
    try:
        return tuple(
            ipaddress.ip_network(part.strip(), strict=False)
            for part in raw.split(",")
            if part.strip()
        )
    except ValueError:
        raise ValueError("expected comma-separated IP addresses or CIDRs") from None


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")
