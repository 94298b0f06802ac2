"""The ``cortex-core`` command line.

Commands:
  serve     run the gRPC server until SIGTERM/SIGINT (migrations are applied first)
  migrate   apply pending database migrations and exit
  chat      talk to a running server from the terminal (see cortex_core.clients.chat)
  cluster   N replicas behind Envoy on this machine (see cortex_core.cluster)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from cortex_core import __version__
from cortex_core.settings import VARIABLES, Settings, SettingsError, StartupError

log = logging.getLogger("cortex_core")


def _environment_help() -> str:
    """The configuration table of ``--help``, from :data:`cortex_core.settings.VARIABLES`."""
    width = max(len(v.name) for v in VARIABLES) + 2
    wrap = textwrap.TextWrapper(
        width=100,
        initial_indent="  ",
        subsequent_indent=" " * (width + 2),
        break_on_hyphens=False,  # keep x-forwarded-for and the like whole
    )
    lines = ["configuration (environment variables, read once at start; see docs/llm.md for LLMs):"]
    for variable in VARIABLES:
        lines.append(
            wrap.fill(f"{variable.name:<{width}}{variable.help} (default {variable.default})")
        )
    return "\n".join(lines) + "\n"


_ENVIRONMENT_HELP = _environment_help()


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
    from cortex_core.clients import chat

    chat.add_arguments(
        commands.add_parser(
            "chat",
            help="talk to a running server: log in, then send lines and stream the replies",
            description=chat.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    from cortex_core import cluster

    cluster.add_arguments(
        commands.add_parser(
            "cluster",
            help="run N replicas on one PostgreSQL and Redis behind Envoy (make cluster)",
            description=cluster.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "chat":  # a client: the server's configuration does not apply
        from cortex_core.clients.chat import run as run_chat

        return run_chat(args)
    if args.command == "cluster":  # a launcher: each replica reads its own configuration
        from cortex_core.cluster import run as run_cluster

        return run_cluster(args)
    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"cortex-core: configuration error: {exc}", file=sys.stderr)
        return 2

    from cortex_core.logs import configure_logging

    configure_logging(settings.python_log_level, settings.log_format)
    if args.command == "serve":
        return _run(_serve(settings))
    return _run(migrate_database(settings))


def _run(coro: asyncio.Future[None] | object) -> int:
    import uvloop

    try:
        uvloop.run(coro)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        return 130
    except StartupError as exc:
        print(f"cortex-core: cannot start: {exc}", file=sys.stderr)
        return 2
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


async def migrate_database(settings: Settings) -> None:
    """``cortex-core migrate``: apply pending migrations to the settings' database and
    say so; raise :class:`StartupError` when it does not answer."""
    from cortex_core import errors
    from cortex_core.adapters.sql.database import SqlDatabase
    from cortex_core.bootstrap import database_unreachable, public_address

    database = SqlDatabase.from_url(settings.effective_database_url)
    try:
        await database.migrate()
    except errors.Unavailable as error:
        raise database_unreachable(settings, error) from None
    finally:
        await database.dispose()
    print(f"migrations applied to {public_address(settings.effective_database_url)}")
