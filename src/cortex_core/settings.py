"""Typed configuration read once from ``CORTEX_*`` environment variables.

This module is the one environment reader: :class:`EnvReader` reads and checks
every variable, the LLM configuration included (``load_llm_config`` reads its
variables through it). ``Settings.from_env`` is called exactly once, by the CLI,
before anything else starts. A malformed value raises :class:`SettingsError`
whose message names the offending variable (and never repeats a secret's value),
so a bad deployment stops at start instead of misbehaving later.

The table of variables is written once, here: each field of :class:`Settings`
carries its help text, and :data:`VARIABLES` (every variable, with its default
and help) is what ``cortex-core --help`` prints and what a test holds the
README's configuration table to.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from limits import RateLimitItem

from cortex_core.adapters.experts_config import ExpertsConfigError, load_experts
from cortex_core.adapters.llm.config import LlmConfig, LlmConfigError, load_llm_config
from cortex_core.adapters.mcp.config import McpConfig, load_mcp_config
from cortex_core.adapters.security.passwords import OWASP_MIN_MEMORY_COST_KIB, OWASP_MIN_TIME_COST
from cortex_core.api.limits import rate
from cortex_core.domain.tasks import Expert

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LOG_FORMATS = ("json", "console")
_URL_CREDENTIALS = re.compile(r"//[^/@]*@")


class SettingsError(ValueError):
    """A ``CORTEX_*`` variable has a value the server cannot use."""


class StartupError(SettingsError):
    """What a ``CORTEX_*`` variable names cannot be used at start (a database or
    Redis that does not answer, a data dir that is not a writable directory)."""


class EnvReader:
    """Reads variables from one environment mapping; the only code that does.

    :meth:`get` returns ``default`` for an unset or blank variable and raises
    :class:`SettingsError` naming the variable when ``parse`` raises ``ValueError``.
    A ``secret`` value is never repeated in the message; credentials in a URL are
    masked.

    A ``secret`` variable (and any read with ``from_file=True``) may instead name a
    file in ``<NAME>_FILE`` (Docker and Kubernetes secrets): the file is read once,
    here, one trailing newline dropped. Setting both is an error naming both; a file
    that cannot be read is an error naming ``<NAME>_FILE`` and its path, never its
    content.
    """

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(
        self,
        name: str,
        default: T,
        parse: Callable[[str], T],
        *,
        secret: bool = False,
        from_file: bool | None = None,
    ) -> T:
        raw = self._environ.get(name)
        source = name
        if secret if from_file is None else from_file:
            raw, source = self._value_or_file(name, raw)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            # A value read from a file is never echoed: files are where secrets live.
            hidden = secret or source != name
            shown = source if hidden else f"{source}={_URL_CREDENTIALS.sub('//***@', raw)!r}"
            raise SettingsError(f"{shown} is invalid: {exc}") from None

    def is_set(self, name: str) -> bool:
        return bool(self._environ.get(name, "").strip())

    def _value_or_file(self, name: str, raw: str | None) -> tuple[str | None, str]:
        """The variable's value, or the content of the file ``<NAME>_FILE`` names."""
        file_name = name + FILE_SUFFIX
        path = self._environ.get(file_name, "").strip()
        if not path:
            return raw, name
        if raw is not None and raw.strip():
            raise SettingsError(f"{name} and {file_name} are both set; set only one")
        try:
            content = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not a UTF-8 text file"
            raise SettingsError(f"{file_name}={path!r} cannot be read: {reason}") from None
        return content.removesuffix("\n").removesuffix("\r"), file_name


#: What a variable's name gets to name a file holding its value instead.
FILE_SUFFIX = "_FILE"


@dataclasses.dataclass(frozen=True, slots=True)
class Variable:
    """One row of the configuration table."""

    name: str
    default: str
    help: str


def _setting(
    default: Any,
    parse: Callable[[str], Any],
    help: str,
    *,
    shown: str | None = None,
    secret: bool = False,
    from_file: bool = False,
) -> Any:
    """A :class:`Settings` field read from ``CORTEX_<FIELD>`` with ``parse``; a
    ``secret`` one (or one with ``from_file``) also from ``CORTEX_<FIELD>_FILE``."""
    metadata = {
        "parse": parse,
        "help": help,
        "shown": shown,
        "secret": secret,
        "from_file": secret or from_file,
    }
    if isinstance(default, tuple | Path) or secret:
        return dataclasses.field(default=default, metadata=metadata, repr=not secret)
    return dataclasses.field(default=default, metadata=metadata)


def _address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT with a port from 0 to 65535")
    return raw


def _optional_address(raw: str) -> str:
    return _address(raw) if raw else ""


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


N = TypeVar("N", int, float)


def _bounded(
    convert: Callable[[str], N], minimum: N, *, strict: bool, message: str
) -> Callable[[str], N]:
    """A parser of ``convert(raw)`` that is above (``strict``) or at least ``minimum``."""

    def parse(raw: str) -> N:
        value = convert(raw)
        if value < minimum or (strict and value == minimum):
            raise ValueError(message)
        return value

    return parse


def _at_least(minimum: int) -> Callable[[str], int]:
    return _bounded(
        int, minimum, strict=False, message=f"must be at least {minimum} (the OWASP minimum)"
    )


_positive_float = _bounded(float, 0.0, strict=True, message="expected a number greater than 0")
_non_negative_float = _bounded(float, 0.0, strict=False, message="expected a number of 0 or more")
_positive_int = _bounded(int, 0, strict=True, message="expected a whole number greater than 0")
_non_negative_int = _bounded(int, 0, strict=False, message="expected a whole number of 0 or more")


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


@dataclasses.dataclass(frozen=True, slots=True)
class PemFile:
    """A PEM file read once at start: where it was and what it holds."""

    path: Path
    data: bytes = dataclasses.field(repr=False)


def _read_pem(raw: str) -> PemFile:
    path = Path(raw)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    return PemFile(path, data)


def _certificates(raw: str) -> PemFile:
    """One or more PEM certificates (a chain, or a bundle of CAs)."""
    from cryptography import x509

    pem = _read_pem(raw)
    try:
        x509.load_pem_x509_certificates(pem.data)
    except ValueError:
        raise ValueError("is not a PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    return pem


def _private_key(raw: str) -> PemFile:
    """An unencrypted PEM private key; the error never shows its content."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pem = _read_pem(raw)
    try:
        load_pem_private_key(pem.data, password=None)
    except (ValueError, TypeError):
        raise ValueError("is not an unencrypted PEM private key") from None
    return pem


def _check_tls(settings: Settings) -> None:
    """Certificate and key come together and match; a client CA needs both."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if (cert is None) != (key is None):
        raise SettingsError("CORTEX_TLS_CERT_FILE and CORTEX_TLS_KEY_FILE must be set together")
    if settings.tls_client_ca_file is not None and cert is None:
        raise SettingsError(
            "CORTEX_TLS_CLIENT_CA_FILE needs CORTEX_TLS_CERT_FILE and CORTEX_TLS_KEY_FILE"
        )
    if cert is None or key is None:
        return
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        PublicFormat,
        load_pem_private_key,
    )

    leaf = x509.load_pem_x509_certificates(cert.data)[0].public_key()
    private = load_pem_private_key(key.data, password=None).public_key()
    spki = Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    if leaf.public_bytes(*spki) != private.public_bytes(*spki):
        raise SettingsError(
            "CORTEX_TLS_KEY_FILE is not the private key of the certificate in CORTEX_TLS_CERT_FILE"
        )


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Every tunable of the server. Field ``x`` is read from ``CORTEX_X``."""

    grpc_address: str = _setting(
        "127.0.0.1:50051", _address, "HOST:PORT to listen on; port 0 picks a free one"
    )
    data_dir: Path = _setting(  # noqa: RUF009 (_setting returns a dataclasses.field)
        Path(".cortex"), Path, "embedded database and generated secrets", shown="./.cortex"
    )
    database_url: str = _setting(
        "",
        _database_url,
        "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB (or a file "
        "holding it: CORTEX_DATABASE_URL_FILE)",
        shown="SQLite in the data dir",
        from_file=True,
    )
    redis_url: str = _setting(
        "",
        _redis_url,
        "redis://HOST:PORT/DB: the event log (relayed from the database's event "
        "store), cache, login and call limits, task wake-ups (or a file holding it: "
        "CORTEX_REDIS_URL_FILE)",
        shown="unset: events in the database, the rest in-process",
        from_file=True,
    )
    redis_max_connections: int = _setting(
        50,
        _positive_int,
        "Redis connections this process opens at most (one pool shared by cache, "
        "events and limits; callers wait for a free one)",
    )
    redis_timeout: float = _setting(
        2.0,
        _positive_float,
        "seconds to connect to Redis, to wait for a reply, or for a free pooled connection",
    )
    log_level: str = _setting("INFO", _one_of(_LOG_LEVELS), "DEBUG, INFO, WARNING, ERROR")
    log_format: str = _setting(
        "json", _one_of(_LOG_FORMATS), "json (one object per line) or console"
    )
    shutdown_grace: float = _setting(
        10.0, _positive_float, "seconds in-flight calls get to finish on SIGTERM"
    )
    max_message_bytes: int = _setting(
        4 * 1024 * 1024, _positive_int, "largest request or response message"
    )
    max_concurrent_rpcs: int = _setting(
        0, _non_negative_int, "calls served at once, 0 for no limit"
    )
    max_pending_requests: int = _setting(
        1000, _positive_int, "calls that may queue for a slot during a reconnect burst"
    )
    tracing: bool = _setting(
        False,
        _boolean,
        "true to export OpenTelemetry traces over OTLP even without an OTEL_EXPORTER_OTLP_*"
        " endpoint (then localhost:4317); an endpoint alone turns tracing on",
    )
    metrics_address: str = _setting(
        "",
        _optional_address,
        "HOST:PORT of the Prometheus /metrics endpoint; empty for no metrics",
        shown="off",
    )
    access_log: bool = _setting(
        True, _boolean, "one line per call: method, code, duration, peer, request id"
    )
    jwt_secret: str = _setting(
        "",
        _secret,
        "key (>= 32 bytes) signing access tokens; set the same value on every replica "
        "(or a file holding it: CORTEX_JWT_SECRET_FILE)",
        shown="generated once into the data dir (0600)",
        secret=True,
    )
    jwt_previous_secrets: tuple[str, ...] = _setting(
        (),
        _secrets,
        "comma-separated older keys that still verify (key rotation; or "
        "CORTEX_JWT_PREVIOUS_SECRETS_FILE)",
        shown="none",
        secret=True,
    )
    access_token_ttl: float = _setting(900.0, _positive_float, "access-token lifetime, seconds")
    session_lifetime: float = _setting(
        30 * 24 * 3600.0,
        _positive_float,
        "absolute lifetime of a session and its refresh tokens, seconds",
        shown="2592000 (30 days)",
    )
    password_workers: int = _setting(
        0, _non_negative_int, "threads hashing passwords, 0 for min(4, CPUs)"
    )
    argon2_memory_kib: int = _setting(
        OWASP_MIN_MEMORY_COST_KIB,
        _at_least(OWASP_MIN_MEMORY_COST_KIB),
        "argon2id memory per hash in KiB (OWASP minimum)",
    )
    argon2_time_cost: int = _setting(
        OWASP_MIN_TIME_COST, _at_least(OWASP_MIN_TIME_COST), "argon2id passes (OWASP minimum)"
    )
    events_heartbeat: float = _setting(
        15.0,
        _positive_float,
        "seconds between heartbeat frames on quiet event streams, and on replies "
        "waiting for tool calls",
    )
    events_retention: float = _setting(
        24 * 3600.0, _positive_float, "seconds events stay replayable"
    )
    events_max_length: int = _setting(10_000, _positive_int, "events kept per workspace log")
    events_queue_size: int = _setting(
        256, _positive_int, "frames buffered per subscriber before a slow one is cut off"
    )
    context_budget: int = _setting(8192, _positive_int, "tokens of context sent with each reply")
    local_llm_delay: float = _setting(
        0.0, _non_negative_float, "seconds between words of the local development provider"
    )
    memory_sweep_interval: float = _setting(
        60.0, _positive_float, "seconds between deletions of expired memories"
    )
    max_active_replies: int = _setting(
        256,
        _positive_int,
        "replies streamed at once per process; one more SendMessage is refused up front with "
        "RESOURCE_EXHAUSTED and RetryInfo (docs/context.md)",
    )
    tool_max_steps: int = _setting(
        8,
        _positive_int,
        "model turns one reply may end by calling tools; the next ends it with "
        "FINISH_REASON_STEP_LIMIT (docs/context.md)",
    )
    tool_parallel: int = _setting(
        4, _positive_int, "tool calls of one model turn that run at once (docs/context.md)"
    )
    trusted_proxies: tuple[IPNetwork, ...] = _setting(
        (),
        _networks,
        "comma-separated CIDRs of proxies (e.g. Envoy) whose x-forwarded-for names the client; "
        "from any other peer it is ignored",
        shown="none",
    )
    tls_cert_file: PemFile | None = _setting(  # noqa: RUF009 (a dataclasses.field)
        None,
        _certificates,
        "PEM certificate chain of the server; with CORTEX_TLS_KEY_FILE the port speaks TLS "
        "(docs/security.md)",
        shown="unset: plaintext",
    )
    tls_key_file: PemFile | None = _setting(  # noqa: RUF009 (a dataclasses.field)
        None,
        _private_key,
        "PEM private key of that certificate (unencrypted, mode 0600)",
        shown="none",
    )
    tls_client_ca_file: PemFile | None = _setting(  # noqa: RUF009 (a dataclasses.field)
        None,
        _certificates,
        "PEM CA bundle; when set, clients must present a certificate it signed (mTLS)",
        shown="none: no client certificates",
    )
    rate_user: RateLimitItem = _setting(  # noqa: RUF009 (_setting returns a dataclasses.field)
        rate("6000/minute"),
        rate,
        "authenticated calls one user may make (a `limits` rate such as 6000/minute); "
        "over it: RESOURCE_EXHAUSTED/RATE_LIMITED with RetryInfo (docs/security.md)",
        shown="6000/minute",
    )
    rate_workspace: RateLimitItem = _setting(  # noqa: RUF009 (_setting returns a dataclasses.field)
        rate("30000/minute"),
        rate,
        "calls naming one workspace in parent/name/workspace, all its members together",
        shown="30000/minute",
    )
    rate_prefix: str = _setting(
        "cortex:rate",
        str,
        "prefix of the rate-limit keys in Redis (tests and deployments sharing one Redis "
        "keep theirs apart)",
    )
    max_streams_per_user: int = _setting(
        32,
        _positive_int,
        "SubscribeEvents, SendMessage and WatchTask streams one user may hold open per "
        "process; one more: RESOURCE_EXHAUSTED/TOO_MANY_STREAMS",
    )
    login_account_attempts: int = _setting(
        5, _positive_int, "failed sign-ins per account before growing delays (docs/security.md)"
    )
    login_address_attempts: int = _setting(
        50, _positive_int, "failed sign-ins per client address before growing delays"
    )
    register_address_attempts: int = _setting(
        100, _positive_int, "sign-ups per client address before growing delays"
    )
    database_wait: float = _setting(
        30.0,
        _positive_float,
        "seconds a call waits for a database connection or the SQLite write lock before "
        "UNAVAILABLE/DATABASE_BUSY (with RetryInfo)",
    )
    mcp_config: McpConfig = _setting(  # noqa: RUF009 (_setting returns a dataclasses.field)
        McpConfig(),
        load_mcp_config,
        "TOML file of MCP servers whose tools Cortex offers, one [servers.NAME] table each "
        "(docs/tools.md)",
        shown="none: built-in tools only",
    )
    experts_config: str = _setting(
        "",
        str,
        "TOML file of experts, one [experts.<id>] table each (docs/tasks.md)",
        shown="embedded: echo, summarize, extract",
    )
    task_workers: int = _setting(
        4, _positive_int, "task attempts this process runs at once (docs/tasks.md)"
    )
    task_lease: float = _setting(
        15.0,
        _positive_float,
        "seconds a running task's lease lasts without a heartbeat; a dead worker's task is "
        "retried elsewhere after it",
    )
    task_retry_backoff: float = _setting(
        1.0,
        _positive_float,
        "seconds before a failed attempt is retried, doubled per failure (up to 60, with jitter)",
    )
    task_input_ttl: float = _setting(
        24 * 3600.0,
        _positive_float,
        "seconds a task's input request waits for an answer before the task fails",
        shown="86400 (1 day)",
    )
    task_queue_limit: int = _setting(
        100,
        _positive_int,
        "queued tasks per workspace; one more CreateTask is RESOURCE_EXHAUSTED TASK_QUEUE_FULL "
        "(with RetryInfo)",
    )
    task_running_limit: int = _setting(
        10,
        _positive_int,
        "running tasks per workspace, over every replica; the workspace's other tasks wait queued",
    )
    task_retention: float = _setting(
        7 * 24 * 3600.0,
        _positive_float,
        "seconds finished tasks (and their journals) are kept",
        shown="604800 (7 days)",
    )
    llm: LlmConfig = dataclasses.field(default_factory=LlmConfig)
    experts: tuple[Expert, ...] = dataclasses.field(default_factory=lambda: load_experts("", ()))

    @property
    def effective_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cortex.db').resolve()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise :class:`SettingsError`."""
        reader = EnvReader(environ)
        values: dict[str, Any] = {
            field.name: reader.get(
                _variable(field.name),
                field.default,
                field.metadata["parse"],
                secret=field.metadata["secret"],
                from_file=field.metadata["from_file"],
            )
            for field in dataclasses.fields(cls)
            if field.metadata
        }
        try:
            values["llm"] = load_llm_config(reader)
        except LlmConfigError as exc:
            raise SettingsError(str(exc)) from None
        try:
            values["experts"] = load_experts(
                values["experts_config"], [p.name for p in values["llm"].providers]
            )
        except ExpertsConfigError as exc:
            raise SettingsError(str(exc)) from None
        settings = cls(**values)
        _check_tls(settings)
        return settings

    @property
    def python_log_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]


def _variable(field: str) -> str:
    return f"CORTEX_{field.upper()}"


def _shown(field: dataclasses.Field[Any]) -> str:
    if field.metadata["shown"] is not None:
        return str(field.metadata["shown"])
    default = field.default
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


#: The providers' variables (read by :func:`load_llm_config`; details in docs/llm.md).
LLM_VARIABLES = (
    Variable(
        "CORTEX_LLM_PROVIDERS", "local", "provider fallback chain, e.g. openai,anthropic,local"
    ),
    Variable("CORTEX_LLM_CONFIG", "none", "TOML file describing richer chains (docs/llm.md)"),
    Variable("CORTEX_LLM_RETRIES", "2", "retries per provider before the next one"),
    Variable("CORTEX_LLM_BACKOFF", "0.25", "first retry delay in seconds, doubled each time"),
    Variable("CORTEX_LLM_BACKOFF_MAX", "4", "longest retry delay in seconds"),
    Variable("CORTEX_LLM_BREAKER_FAILURES", "5", "failed attempts in a row that open a circuit"),
    Variable("CORTEX_LLM_BREAKER_RESET", "30", "seconds an open circuit waits before a probe"),
    Variable("CORTEX_OPENAI_BASE_URL", "OpenAI's API", "any OpenAI-compatible endpoint"),
    Variable(
        "CORTEX_OPENAI_API_KEY",
        "none",
        "required unless a base URL is set (or a file holding it: CORTEX_OPENAI_API_KEY_FILE)",
    ),
    Variable("CORTEX_OPENAI_MODEL", "none", "required when openai is in the chain"),
    Variable("CORTEX_OPENAI_TIMEOUT", "60", "seconds to wait for data"),
    Variable("CORTEX_OPENAI_MAX_TOKENS_PARAM", "max_tokens", "max_tokens or max_completion_tokens"),
    Variable("CORTEX_ANTHROPIC_BASE_URL", "Anthropic's API", "another Anthropic endpoint"),
    Variable(
        "CORTEX_ANTHROPIC_API_KEY",
        "none",
        "required unless a base URL is set (or a file holding it: CORTEX_ANTHROPIC_API_KEY_FILE)",
    ),
    Variable("CORTEX_ANTHROPIC_MODEL", "none", "required when anthropic is in the chain"),
    Variable("CORTEX_ANTHROPIC_TIMEOUT", "60", "seconds to wait for data"),
)

#: Every variable the server reads, in the order ``--help`` lists them.
VARIABLES: tuple[Variable, ...] = (
    *(
        Variable(_variable(f.name), _shown(f), f.metadata["help"])
        for f in dataclasses.fields(Settings)
        if f.metadata
    ),
    *LLM_VARIABLES,
)


def markdown_table() -> str:
    """The README's configuration table (``python -m cortex_core.settings`` prints it)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {v.default} | {v.help} |" for v in VARIABLES]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
