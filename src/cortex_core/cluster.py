"""``cortex-core cluster``: N replicas behind Envoy on one machine, in one command.

What it does, in order (``make cluster`` runs it; docs/deploy.md explains why):

1. Creates the PostgreSQL database if it does not exist (a development
   convenience; production creates it beforehand) and applies the migrations
   once (what ``cortex-core migrate`` does), as a deploy step, before any
   replica starts.
2. Starts ``--replicas`` ``cortex-core serve`` processes on the same database and
   Redis with one shared JWT secret (``CORTEX_JWT_SECRET_FILE``, a 0600 file in
   the cluster directory, unless the environment already sets one), replica ``i``
   on ``--base-port + i`` (every replica picks a free port with ``--base-port 0``).
3. Renders the Envoy config for those replicas from the committed single-server
   config (``envoy/envoy.yaml``: same listener, CORS, timeouts, keepalive,
   retries and active ``grpc.health.v1`` checks; only the addresses change) and
   starts Envoy, then waits until Envoy reports every replica healthy.
4. Prints one line per process (pid, address, log file), then waits. A replica
   that dies is reported and left dead (Envoy routes around it); when no replica
   or Envoy is left, everything stops with exit code 1.
5. On Ctrl-C or SIGTERM: every replica gets SIGTERM and drains (health turns
   NOT_SERVING, Envoy stops routing to it, calls in flight finish through Envoy),
   then Envoy stops; exit code 0 when each of them exited 0.

Child processes run in their own process group, so the terminal's Ctrl-C reaches
only the launcher, which stops them in that order. The launcher is a plain
synchronous program (no event loop): it waits on pipes and child processes.
Every replica inherits the caller's environment, so any ``CORTEX_*`` setting
(grace, heartbeat, limits) applies to all of them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/cortex"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
STARTUP_TIMEOUT = 60.0
STOP_MARGIN = 10.0  # seconds after the replicas' grace before they are killed
ENVOY_STOP_TIMEOUT = 10.0
_READY = re.compile(r"serving on (\S+:\d+)")
# The addresses envoy/envoy.yaml names; rendering fails loudly if one moved.
_TEMPLATE_LISTENER = "{ address: 127.0.0.1, port_value: 8080 }"
_TEMPLATE_ADMIN = "{ address: 127.0.0.1, port_value: 9901 }"
_TEMPLATE_ENDPOINT = re.compile(
    r"^(?P<indent> *)- endpoint:\n"
    r"(?P=indent)    address:\n"
    r"(?P=indent)      socket_address: \{ address: 127\.0\.0\.1, port_value: 50051 \}\n",
    re.MULTILINE,
)


class ClusterError(RuntimeError):
    """The cluster cannot start: the message says which part and why."""


def render_envoy(template: str, *, listener: str, admin: str, upstreams: Sequence[str]) -> str:
    """The Envoy config of ``template`` (envoy/envoy.yaml) listening on ``listener``,
    with its admin on ``admin`` and one endpoint per ``upstreams`` address; raise
    :class:`ClusterError` if the template does not name each address exactly once."""
    if not upstreams:
        raise ClusterError("at least one upstream is needed")
    text = template
    for old, address in ((_TEMPLATE_LISTENER, listener), (_TEMPLATE_ADMIN, admin)):
        if text.count(old) != 1:
            raise ClusterError(f"the Envoy template must contain {old!r} exactly once")
        text = text.replace(old, _socket_address(address))
    found = list(_TEMPLATE_ENDPOINT.finditer(text))
    if len(found) != 1:
        raise ClusterError("the Envoy template must list exactly one endpoint on port 50051")
    indent = found[0]["indent"]
    endpoints = "".join(
        f"{indent}- endpoint:\n{indent}    address:\n"
        f"{indent}      socket_address: {_socket_address(upstream)}\n"
        for upstream in upstreams
    )
    return text[: found[0].start()] + endpoints + text[found[0].end() :]


def _socket_address(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{{ address: {host}, port_value: {int(port)} }}"


@dataclasses.dataclass
class Child:
    """A process the launcher started: what it is, and where its output goes."""

    name: str
    process: subprocess.Popen[str]
    log_path: Path
    address: str = ""
    metrics: str = ""

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclasses.dataclass(frozen=True)
class Options:
    replicas: int
    database_url: str
    redis_url: str
    base_port: int
    metrics_base_port: int
    listen: str
    admin: str
    directory: Path
    envoy: str
    envoy_template: Path
    cortex: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    parser.add_argument(
        "--replicas", type=int, default=int(env.get("REPLICAS", "2")), help="default 2"
    )
    parser.add_argument(
        "--database-url",
        default=env.get("CLUSTER_DATABASE_URL", DEFAULT_DATABASE_URL),
        help=f"PostgreSQL for every replica (default {DEFAULT_DATABASE_URL})",
    )
    parser.add_argument(
        "--redis-url",
        default=env.get("CLUSTER_REDIS_URL", DEFAULT_REDIS_URL),
        help=f"Redis for every replica (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--base-port",
        type=int,
        default=50051,
        help="replica i listens on BASE+i-1 (default 50051); 0: each picks a free port",
    )
    parser.add_argument(
        "--metrics-base-port",
        type=int,
        default=0,
        help="replica i serves Prometheus /metrics on BASE+i-1 (default 0: no metrics)",
    )
    parser.add_argument(
        "--listen", default="127.0.0.1:8080", help="Envoy's gRPC and gRPC-Web listener"
    )
    parser.add_argument("--admin", default="127.0.0.1:9901", help="Envoy's admin (local only)")
    parser.add_argument(
        "--directory",
        type=Path,
        default=Path(".cortex/cluster"),
        help="logs, data dirs, the JWT secret file and the rendered Envoy config",
    )
    parser.add_argument(
        "--envoy", default=_beside_python("envoy"), help="the Envoy binary (default: .venv's)"
    )
    parser.add_argument(
        "--envoy-template",
        type=Path,
        default=Path("envoy/envoy.yaml"),
        help="the single-server Envoy config to render for N replicas",
    )


def _beside_python(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def run(args: argparse.Namespace) -> int:
    """The ``cluster`` command; returns the exit code."""
    options = Options(
        replicas=args.replicas,
        database_url=args.database_url,
        redis_url=args.redis_url,
        base_port=args.base_port,
        metrics_base_port=args.metrics_base_port,
        listen=args.listen,
        admin=args.admin,
        directory=args.directory,
        envoy=args.envoy,
        envoy_template=args.envoy_template,
        cortex=_beside_python("cortex-core"),
    )
    if options.replicas < 1:
        print("cortex-core cluster: --replicas must be at least 1", file=sys.stderr)
        return 2
    stop = _StopFlag()
    try:
        with _running(options, stop) as children:
            code = _watch(children, stop)
    except ClusterError as error:
        print(f"cortex-core cluster: {error}", file=sys.stderr)
        return 1
    return code if stop.drained else 1


class _StopFlag:
    """Set by SIGINT/SIGTERM; the launcher polls it."""

    def __init__(self) -> None:
        self.signalled = False
        self.drained = True  # every replica stopped at the end exited 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._set)

    def _set(self, signum: int, frame: FrameType | None) -> None:
        self.signalled = True


def _say(message: str) -> None:
    print(f"cortex cluster: {message}", flush=True)


@contextlib.contextmanager
def _running(options: Options, stop: _StopFlag) -> Iterator[list[Child]]:
    """Everything started (see the module docstring); stopped on the way out."""
    directory = options.directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    env = replica_environment(options, directory, os.environ)
    _ensure_database(options.database_url)
    _migrate(env)
    replicas: list[Child] = []
    envoy: Child | None = None
    try:
        for i in range(1, options.replicas + 1):
            replicas.append(_start_replica(options, env, directory, i))
        for replica in replicas:
            replica.address = _wait_serving(replica, stop)
            metrics = f", metrics http://{replica.metrics}/metrics" if replica.metrics else ""
            _say(
                f"replica {replica.name} pid {replica.process.pid} serving on {replica.address}, "
                f"log {replica.log_path}{metrics}"
            )
        envoy = _start_envoy(options, directory, [r.address for r in replicas], stop)
        _say("ready: call the listener with gRPC or gRPC-Web; Ctrl-C stops everything")
        yield [*replicas, envoy]
    finally:
        stop.drained = _stop(replicas, envoy, env)


def replica_environment(
    options: Options, directory: Path, environ: Mapping[str, str]
) -> dict[str, str]:
    """What every replica (and the migration step) runs with: ``environ`` with the
    cluster's database and Redis, the shared signing key and Envoy as trusted proxy."""
    env = {
        **environ,
        "CORTEX_DATABASE_URL": options.database_url,
        "CORTEX_REDIS_URL": options.redis_url,
    }
    if not (env.get("CORTEX_JWT_SECRET") or env.get("CORTEX_JWT_SECRET_FILE")):
        env["CORTEX_JWT_SECRET_FILE"] = str(_jwt_secret_file(directory))
    # Envoy (on loopback) appends the caller's address to x-forwarded-for: the
    # replicas log and throttle by it. In production, name Envoy's addresses.
    env.setdefault("CORTEX_TRUSTED_PROXIES", "127.0.0.1/32")
    return env


def _jwt_secret_file(directory: Path) -> Path:
    """The one signing key every replica shares, made once (0600) and kept."""
    path = directory / "jwt-secret"
    if not path.exists():
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
    return path


def _ensure_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it is missing (SQLite: nothing)."""
    if not url.startswith("postgresql"):
        return
    import asyncio

    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.ext.asyncio import create_async_engine

    parsed = sa.make_url(url)
    name = parsed.database or "postgres"

    async def ensure() -> bool:
        # CREATE DATABASE cannot run in a transaction: autocommit, on the server's
        # maintenance database.
        engine = create_async_engine(
            parsed.set(database="postgres"),
            isolation_level="AUTOCOMMIT",
            connect_args={"timeout": 10},
        )
        try:
            async with engine.connect() as connection:
                exists = await connection.scalar(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
                )
                if exists:
                    return False
                quoted = name.replace('"', '""')
                await connection.execute(sa.text(f'CREATE DATABASE "{quoted}"'))
                return True
        finally:
            await engine.dispose()

    try:
        created = asyncio.run(ensure())
    except (OSError, SQLAlchemyError) as error:
        shown = parsed.render_as_string(hide_password=True)
        reason = getattr(error, "orig", None) or error
        raise ClusterError(f"PostgreSQL at {shown} cannot be used: {reason}") from None
    if created:
        _say(f"created database {name}")


def _migrate(env: Mapping[str, str]) -> None:
    """What ``cortex-core migrate`` does, once, before any replica: the deploy step
    (in this process, which has already paid for the imports)."""
    import asyncio

    from cortex_core.cli import migrate_database
    from cortex_core.settings import Settings, SettingsError

    try:
        asyncio.run(migrate_database(Settings.from_env(env)))
    except SettingsError as error:  # StartupError included: the database does not answer
        raise ClusterError(f"cannot migrate: {error}") from None


def _start_replica(options: Options, env: Mapping[str, str], directory: Path, i: int) -> Child:
    port = options.base_port + i - 1 if options.base_port else 0
    log_path = directory / f"replica-{i}.log"
    replica_env = {
        **env,
        "CORTEX_GRPC_ADDRESS": f"127.0.0.1:{port}",
        "CORTEX_DATA_DIR": str(directory / f"replica-{i}"),
    }
    if options.metrics_base_port:
        replica_env["CORTEX_METRICS_ADDRESS"] = f"127.0.0.1:{options.metrics_base_port + i - 1}"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [options.cortex, "serve"],
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
            env=replica_env,
            process_group=0,  # the terminal's Ctrl-C reaches the launcher only
        )
    return Child(str(i), process, log_path, metrics=replica_env.get("CORTEX_METRICS_ADDRESS", ""))


def _wait_serving(replica: Child, stop: _StopFlag) -> str:
    """The address the replica reports once it serves; ``ClusterError`` otherwise."""
    stdout: IO[str] | None = replica.process.stdout
    assert stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and not stop.signalled:
        ready, _, _ = select.select([stdout], [], [], 0.2)
        if ready:
            match = _READY.search(stdout.readline())
            if match:
                return match.group(1)
        if replica.process.poll() is not None:
            raise ClusterError(
                f"replica {replica.name} exited with {replica.process.returncode}:\n"
                f"{replica.log_tail()}"
            )
    if stop.signalled:
        raise ClusterError("stopped before the cluster was ready")
    raise ClusterError(f"replica {replica.name} did not start:\n{replica.log_tail()}")


def _start_envoy(
    options: Options, directory: Path, upstreams: Sequence[str], stop: _StopFlag
) -> Child:
    try:
        template = options.envoy_template.read_text()
    except OSError as error:
        raise ClusterError(f"cannot read {options.envoy_template}: {error.strerror}") from None
    config = directory / "envoy.yaml"
    config.write_text(
        render_envoy(template, listener=options.listen, admin=options.admin, upstreams=upstreams)
    )
    admin_path = directory / "envoy-admin-address"
    admin_path.unlink(missing_ok=True)
    log_path = directory / "envoy.log"
    command = [
        options.envoy,
        *("-c", str(config), "--admin-address-path", str(admin_path)),
        # No shared-memory hot-restart domain: it would clash with another Envoy
        # (`make envoy`, a test) on the machine.
        "--disable-hot-restart",
        *("--log-level", "warn"),
    ]
    with log_path.open("w") as log_file:
        try:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, text=True, process_group=0
            )
        except OSError as error:
            raise ClusterError(f"cannot run Envoy ({options.envoy}): {error.strerror}") from None
    envoy = Child("envoy", process, log_path)
    admin, listener = _wait_envoy_ready(envoy, admin_path, upstreams, stop)
    envoy.address = listener
    _say(
        f"envoy pid {process.pid}: gRPC and gRPC-Web on {listener}, admin http://{admin}, "
        f"config {config}, log {log_path}"
    )
    return envoy


def _wait_envoy_ready(
    envoy: Child, admin_path: Path, upstreams: Sequence[str], stop: _StopFlag
) -> tuple[str, str]:
    """(admin, listener) once Envoy's active health checks found every replica SERVING."""
    wanted = {f"cortex::{upstream}::health_flags::healthy" for upstream in upstreams}
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last = "no admin address yet"
    while time.monotonic() < deadline and not stop.signalled:
        if envoy.process.poll() is not None:
            raise ClusterError(f"envoy exited with {envoy.process.returncode}:\n{envoy.log_tail()}")
        try:
            admin = admin_path.read_text().strip() if admin_path.exists() else ""
            if admin:
                listeners = json.loads(admin_get(admin, "/listeners?format=json"))
                socket = listeners["listener_statuses"][0]["local_address"]["socket_address"]
                listener = f"{socket['address']}:{socket['port_value']}"
                if wanted <= set(admin_get(admin, "/clusters").splitlines()):
                    return admin, listener
                last = "replicas not reported healthy yet"
        except (OSError, ValueError, KeyError, IndexError) as error:
            last = repr(error)
        time.sleep(0.1)
    if stop.signalled:
        raise ClusterError("stopped before the cluster was ready")
    raise ClusterError(f"envoy not ready ({last}):\n{envoy.log_tail()}")


def admin_get(address: str, path: str) -> str:
    """GET ``path`` from Envoy's admin at ``address``."""
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def _watch(children: list[Child], stop: _StopFlag) -> int:
    """Until a signal: report children that exit; 1 when no replica or Envoy is left."""
    *replicas, envoy = children
    reported: set[str] = set()
    while not stop.signalled:
        for child in children:
            code = child.process.poll()
            if code is not None and child.name not in reported:
                reported.add(child.name)
                what = "envoy" if child is envoy else f"replica {child.name}"
                _say(f"{what} exited with {code} (log {child.log_path})")
        if envoy.name in reported or len(reported) == len(replicas):
            _say("nothing left to serve; stopping")
            return 1
        time.sleep(0.2)
    return 0


def _stop(replicas: list[Child], envoy: Child | None, env: Mapping[str, str]) -> bool:
    """SIGTERM every replica (they drain at once, in parallel) with Envoy still
    routing what they finish, then stop Envoy; kill whatever outlives its time.
    Whether every replica stopped here exited 0."""
    grace = float(env.get("CORTEX_SHUTDOWN_GRACE") or 10.0)
    running = [r for r in replicas if r.process.poll() is None]
    if running:
        _say(f"stopping {len(running)} replica(s) (drain, up to {grace:g} s)")
    for replica in running:
        replica.process.send_signal(signal.SIGTERM)
    codes = []
    for replica in running:
        codes.append(_wait_or_kill(replica.process, grace + STOP_MARGIN))
        _say(f"replica {replica.name} stopped ({codes[-1]})")
    for replica in replicas:
        if replica.process.stdout is not None:
            replica.process.stdout.close()
    if envoy is not None and envoy.process.poll() is None:
        envoy.process.send_signal(signal.SIGTERM)
        _wait_or_kill(envoy.process, ENVOY_STOP_TIMEOUT)
        _say("envoy stopped")
    return all(code == 0 for code in codes)


def _wait_or_kill(process: subprocess.Popen[Any], timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
