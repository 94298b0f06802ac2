"""The ``cortex-core`` command line.

Commands:
  serve     run the gRPC server until SIGTERM/SIGINT (migrations are applied first)
  migrate   apply pending database migrations and exit
  chat      talk to a running server from the terminal (see cortex_core.chat)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from cortex_core import __version__
from cortex_core.settings import Settings, SettingsError

log = logging.getLogger("cortex_core")

_ENVIRONMENT_HELP = """\
configuration (environment variables, read once at start):
  CORTEX_GRPC_ADDRESS          HOST:PORT to listen on (default 127.0.0.1:50051; port 0 picks one)
  CORTEX_DATA_DIR              directory for the embedded database and secrets (default ./.cortex)
  CORTEX_DATABASE_URL          sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB
                               (default: SQLite in the data dir)
  CORTEX_REDIS_URL             redis://HOST:PORT/DB for shared events, cache and limits
                               (default unset: in-process)
  CORTEX_LOG_LEVEL             DEBUG, INFO, WARNING, ERROR (default INFO)
  CORTEX_LOG_FORMAT            json or console (default json)
  CORTEX_SHUTDOWN_GRACE        seconds in-flight calls get to finish on SIGTERM (default 10)
  CORTEX_MAX_MESSAGE_BYTES     largest request or response message (default 4194304)
  CORTEX_MAX_CONCURRENT_RPCS   calls served at once, 0 for no limit (default 0)
  CORTEX_MAX_PENDING_REQUESTS  calls allowed to queue for a slot (default 1000)
  CORTEX_ACCESS_LOG            false to turn off the per-call access log (default true)
  CORTEX_JWT_SECRET            key (>= 32 bytes) that signs access tokens (default: generated once
                               into the data dir with mode 0600; set it in production)
  CORTEX_JWT_PREVIOUS_SECRETS  comma-separated older keys that still verify (key rotation)
  CORTEX_ACCESS_TOKEN_TTL      access-token lifetime in seconds (default 900)
  CORTEX_SESSION_LIFETIME      absolute session and refresh-token lifetime, seconds (default 30 d)
  CORTEX_PASSWORD_WORKERS      threads for argon2 hashing, 0 for min(4, CPUs) (default 0)
  CORTEX_ARGON2_MEMORY_KIB     argon2id memory per hash in KiB, >= 19456 (default 19456)
  CORTEX_ARGON2_TIME_COST      argon2id passes, >= 2 (default 2)
  CORTEX_TRUSTED_PROXIES       comma-separated CIDRs whose x-forwarded-for names the client
                               (default none: the peer address is the client's)
  CORTEX_LOGIN_ACCOUNT_ATTEMPTS  failed sign-ins per account before delays (default 5)
  CORTEX_LOGIN_ADDRESS_ATTEMPTS  failed sign-ins per client address before delays (default 50)
  CORTEX_REGISTER_ADDRESS_ATTEMPTS  sign-ups per client address before delays (default 100)
  CORTEX_EVENTS_HEARTBEAT      seconds between heartbeat frames on quiet event streams (default 15)
  CORTEX_EVENTS_RETENTION      seconds events stay replayable (default 86400)
  CORTEX_EVENTS_MAX_LENGTH     events kept per workspace log (default 10000)
  CORTEX_EVENTS_QUEUE_SIZE     frames buffered per subscriber before it is cut off (default 256)
  CORTEX_CONTEXT_BUDGET        tokens of context sent with each reply (default 8192)
  CORTEX_LOCAL_LLM_DELAY       seconds between words of the local development provider (default 0)
  CORTEX_MEMORY_SWEEP_INTERVAL seconds between deletions of expired memories (default 60)
  CORTEX_LLM_PROVIDERS         provider fallback chain, e.g. openai,anthropic,local (default local)
  CORTEX_OPENAI_*, CORTEX_ANTHROPIC_*, CORTEX_LLM_CONFIG  providers: see docs/llm.md
  CORTEX_TRACING               true to emit OpenTelemetry spans for every call (default false)
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cortex-core",
        description="Cortex Core: the asyncio gRPC backend for AI-assistant products.",
        epilog=_ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cortex-core {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "serve",
        help="run the gRPC server (applies migrations first; stops cleanly on SIGTERM)",
        description="Run the gRPC server with health, reflection and every Cortex service.",
        epilog=_ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_parser(
        "migrate",
        help="apply pending database migrations and exit",
        description="Apply pending Alembic migrations to CORTEX_DATABASE_URL and exit.",
        epilog=_ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from cortex_core import chat

    chat.add_arguments(
        commands.add_parser(
            "chat",
            help="talk to a running server: log in, then send lines and stream the replies",
            description=chat.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "chat":  # a client: the server's configuration does not apply
        from cortex_core.chat import run as run_chat

        return run_chat(args)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"cortex-core: configuration error: {exc}", file=sys.stderr)
        return 2

    from cortex_core.logs import configure_logging

    configure_logging(settings.python_log_level, settings.log_format)
    if args.command == "serve":
        return _run(_serve(settings))
    return _run(_migrate(settings))


def _run(coro: asyncio.Future[None] | object) -> int:
    import uvloop

    try:
        uvloop.run(coro)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        return 130
    except SettingsError as exc:
        print(f"cortex-core: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the address is taken: the message says it all
        log.critical("cortex-core failed: %s", exc)
        return 1
    except Exception as exc:  # the top level reports and exits non-zero
        log.critical("cortex-core failed: %s", exc, exc_info=exc)
        return 1
    return 0


async def _serve(settings: Settings) -> None:
    from cortex_core.bootstrap import bootstrap
    from cortex_core.server import serve

    await serve(bootstrap(settings))


async def _migrate(settings: Settings) -> None:
    from cortex_core.adapters.sql.database import SqlDatabase

    database = SqlDatabase.from_url(settings.effective_database_url)
    try:
        await database.migrate()
    finally:
        await database.dispose()
    print(f"migrations applied to {settings.effective_database_url}")
