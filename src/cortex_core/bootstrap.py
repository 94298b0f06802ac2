"""The composition root: the only place that builds engines, clients and servers.

Importing this module does nothing; :func:`bootstrap` builds an :class:`App`
from :class:`~cortex_core.settings.Settings`, choosing the embedded default or
the production adapter for every port. It reads the signing key from the data
dir once, at start (see ``load_key_ring``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cortex_core import errors
from cortex_core.adapters.cache import InMemoryCache
from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.llm.config import LlmConfig, chain_from_config
from cortex_core.adapters.llm.fallback import FallbackProvider
from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.adapters.mcp.source import McpToolSource, loop_name
from cortex_core.adapters.metrics import MetricsEndpoint, NullMetrics, PrometheusMetrics
from cortex_core.adapters.security.jwt_codec import JwtAccessTokenCodec
from cortex_core.adapters.security.keys import load_key_ring
from cortex_core.adapters.security.password_policy import PasswordPolicy
from cortex_core.adapters.security.passwords import Argon2PasswordHasher
from cortex_core.adapters.security.throttle import InMemoryLoginThrottle
from cortex_core.adapters.security.throttle_policy import ThrottlePolicies
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.sql.event_log import SqlEventLog
from cortex_core.adapters.task_signals import LocalTaskSignals
from cortex_core.adapters.token_counter import EstimatedTokenCounter
from cortex_core.api.access_log import AccessLog
from cortex_core.api.auth_service import AuthService
from cortex_core.api.context_service import ContextService
from cortex_core.api.conversation_service import ConversationService
from cortex_core.api.event_encoding import encode
from cortex_core.api.event_service import EventService
from cortex_core.api.expert_service import ExpertService
from cortex_core.api.health import HealthReporter
from cortex_core.api.limits import CallLimiter
from cortex_core.api.memory_service import MemoryService
from cortex_core.api.registry import service_names
from cortex_core.api.session_service import SessionService
from cortex_core.api.streams import StreamRegistry
from cortex_core.api.tool_service import ToolService
from cortex_core.api.workspace_service import WorkspaceService
from cortex_core.domain.context_window import Candidate, ItemKind
from cortex_core.domain.identity import new_id
from cortex_core.domain.tasks import TaskKind
from cortex_core.ports import (
    Cache,
    Clock,
    Database,
    EventLog,
    LlmProvider,
    LoginThrottle,
    Metrics,
    TaskSignals,
    ToolSource,
    UnitOfWork,
)
from cortex_core.services import reactions
from cortex_core.services.authentication import Authenticator
from cortex_core.services.builtin_tools import BuiltinTools
from cortex_core.services.context import ContextManager
from cortex_core.services.conversations import Conversations
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.event_hub import EventHub
from cortex_core.services.event_relay import EventRelay
from cortex_core.services.experts import ExpertCatalog, Experts
from cortex_core.services.identity import Identity
from cortex_core.services.memories import Memories
from cortex_core.services.replies import Replies
from cortex_core.services.session_guard import SessionWatcher
from cortex_core.services.subscriptions import Subscriptions
from cortex_core.services.supervisor import Loop, Supervisor, every
from cortex_core.services.task_runner import RunnerPolicy, TaskRunner
from cortex_core.services.task_watch import TaskWatches
from cortex_core.services.tasks import Tasks
from cortex_core.services.telemetry import no_tracer
from cortex_core.services.tool_invoker import ToolInvoker
from cortex_core.services.tool_loop import LoopLimits
from cortex_core.services.tools import Tools
from cortex_core.services.workspaces import Workspaces
from cortex_core.settings import Settings, SettingsError, StartupError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

PROVIDER_HEALTH_INTERVAL = 2.0
DATABASE_WATCH_INTERVAL = 5.0
TASK_SWEEP_INTERVAL = 1.0
# Expired in-process rate counters are dropped this often (they are ignored once expired).
LIMITS_SWEEP_INTERVAL = 30.0
# A watched task's journal is re-read at least this often (seconds) when no wake-up came:
# what a lost wake-up costs a watcher (and replicas without Redis, which share none),
# against one journal read per watched task per interval on an idle replica.
TASK_WATCH_POLL = 2.0


@dataclasses.dataclass(slots=True)
class App:
    """Everything a running server owns, built once per process."""

    settings: Settings
    clock: Clock
    database: Database
    health: HealthReporter
    streams: StreamRegistry
    access_log: AccessLog | None
    authenticator: Authenticator | None
    servicers: dict[str, object]
    #: The one invoker of every tool call (InvokeTool, replies, tasks).
    tool_invoker: ToolInvoker
    #: Per-user and per-workspace rates, per-user stream caps (the interceptor's).
    limiter: CallLimiter | None = None
    starters: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)
    background: list[Loop] = dataclasses.field(default_factory=list)
    closers: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)
    supervisor: Supervisor = dataclasses.field(default_factory=Supervisor)
    # The expert and task use cases (the ExpertService servicer is built on them),
    # and what the drain hands running tasks back through.
    experts: Experts | None = None
    tasks: Tasks | None = None
    drainers: list[Callable[[float], Awaitable[None]]] = dataclasses.field(default_factory=list)
    #: The SDK's provider when tracing is on (see ``adapters.tracing``), else None.
    tracer_provider: TracerProvider | None = None
    #: Cortex's own spans (model attempts, tool calls, task attempts): a no-op when off.
    tracer: Tracer = dataclasses.field(default_factory=no_tracer)
    metrics: Metrics = dataclasses.field(default_factory=NullMetrics)
    #: The /metrics endpoint once started (``CORTEX_METRICS_ADDRESS``).
    metrics_endpoint: MetricsEndpoint | None = None


def bootstrap(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
    provider: LlmProvider | None = None,
    extra_tool_sources: Sequence[ToolSource] = (),
) -> App:
    """Build the application for ``settings``; ports may be overridden by tests
    (``extra_tool_sources`` are added to the server's own tool sources)."""
    clock = clock or SystemClock()
    provider_of_traces = _tracer_provider(settings)
    tracer = (
        provider_of_traces.get_tracer("cortex_core")
        if provider_of_traces is not None
        else no_tracer()
    )
    prometheus = PrometheusMetrics() if settings.metrics_address else None
    metrics: Metrics = prometheus if prometheus is not None else NullMetrics()
    if not settings.database_url or not settings.jwt_secret:
        prepare_data_dir(settings.data_dir)
    database = database or SqlDatabase.from_url(
        settings.effective_database_url, wait=settings.database_wait
    )
    try:
        key_ring, warning = load_key_ring(
            settings.jwt_secret, settings.jwt_previous_secrets, settings.data_dir
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if warning:
        log.warning(warning)
    tokens = JwtAccessTokenCodec(key_ring, lifetime=timedelta(seconds=settings.access_token_ttl))
    hasher = Argon2PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        max_workers=settings.password_workers or None,
    )
    authenticator = Authenticator(tokens=tokens, uow=database.unit_of_work, clock=clock)
    password_policy = PasswordPolicy()
    redis = _redis(settings)
    if provider_of_traces is not None:
        _instrument(provider_of_traces, database, redis)
    if prometheus is not None and isinstance(database, SqlDatabase):
        prometheus.watch_pool("requests", database.pool_usage)
    event_log, store_log = _event_log(settings, redis, database)
    hub = EventHub(event_log, metrics=prometheus)
    relay = EventRelay(
        log=event_log,
        hub=hub,
        uow=database.unit_of_work,
        encode=encode,
        external=store_log is None,
        trim=store_log.trim if store_log is not None else None,
        metrics=prometheus,
    )
    bus = EventBus(relay)
    identity = Identity(
        uow=database.unit_of_work,
        clock=clock,
        hasher=hasher,
        policy=password_policy,
        tokens=tokens,
        throttle=_throttle(settings, redis, clock),
        events=bus,
        session_lifetime=timedelta(seconds=settings.session_lifetime),
    )
    workspaces = Workspaces(uow=database.unit_of_work, clock=clock, events=bus)
    sessions = SessionWatcher(
        authenticator=authenticator, clock=clock, recheck=settings.events_heartbeat
    )
    subscriptions = Subscriptions(
        hub=hub,
        uow=database.unit_of_work,
        sessions=sessions,
        heartbeat=settings.events_heartbeat,
        queue_size=settings.events_queue_size,
    )
    events = EventService(subscriptions=subscriptions, clock=clock)

    cache = _cache(redis)
    reactions.register(bus, cache=cache, revocations=[authenticator, sessions])
    memories = Memories(uow=database.unit_of_work, clock=clock, events=bus)
    counter = EstimatedTokenCounter()
    chain = chain_from_config(
        settings.llm,
        local=LocalDevelopmentProvider(delay=settings.local_llm_delay),
        tracer=tracer,
        metrics=prometheus,
    )
    provider = provider or chain

    async def relevant_memories(
        uow: UnitOfWork, workspace_id: str, query: str, limit: int
    ) -> list[Candidate]:
        found = await memories.for_context(uow, workspace_id, query, limit)
        return [
            Candidate(
                ItemKind.MEMORY,
                hit.memory.name,
                hit.memory.content,
                counter.count(hit.memory.content),
            )
            for hit in found
        ]

    signals, signals_loop = _task_signals(redis)
    context = ContextManager(
        uow=database.unit_of_work,
        clock=clock,
        counter=counter,
        provider=provider,
        default_budget=settings.context_budget,
        cache=cache,
        events=bus,
        signals=signals,
        memories=relevant_memories,
    )
    supervisor = Supervisor(on_change=lambda state: health.background_changed(state))

    async def tool_server_changed(server: str, up: bool) -> None:
        await health.tool_server_changed(server, up)

    mcp_sources = [
        McpToolSource(
            server,
            on_state=tool_server_changed,
            retry_hint=functools.partial(supervisor.retry_in, loop_name(server.name)),
        )
        for server in settings.mcp_config.servers
    ]
    tool_sources: list[ToolSource] = [
        BuiltinTools(memories=memories, clock=clock),
        *mcp_sources,
        *extra_tool_sources,
    ]
    tool_invoker = ToolInvoker(tool_sources, tracer=tracer, metrics=prometheus)
    conversations = Conversations(
        uow=database.unit_of_work, clock=clock, events=bus, tools=tool_invoker
    )
    replies = Replies(
        uow=database.unit_of_work,
        clock=clock,
        events=bus,
        counter=counter,
        provider=provider,
        context=context,
        sessions=sessions,
        max_active=settings.max_active_replies,
        tools=tool_invoker,
        limits=LoopLimits(max_steps=settings.tool_max_steps, parallel=settings.tool_parallel),
        heartbeat=settings.events_heartbeat,
    )

    local = LocalDevelopmentProvider(delay=settings.local_llm_delay)
    expert_chains = _expert_chains(settings, local)
    catalog = ExpertCatalog(
        settings.experts,
        {e.id: expert_chains.get(e.id, provider) for e in settings.experts},
    )
    experts = Experts(catalog)
    tasks = Tasks(
        uow=database.unit_of_work,
        clock=clock,
        events=bus,
        signals=signals,
        experts=catalog,
        max_queued=settings.task_queue_limit,
        input_ttl=settings.task_input_ttl,
    )
    runner = TaskRunner(
        uow=database.unit_of_work,
        clock=clock,
        events=bus,
        signals=signals,
        experts=catalog,
        invoker=tool_invoker,
        counter=counter,
        worker_id=f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}",
        policy=RunnerPolicy(
            workers=settings.task_workers,
            lease=settings.task_lease,
            heartbeat=min(1.0, settings.task_lease / 3),
            retry_initial=settings.task_retry_backoff,
            input_ttl=settings.task_input_ttl,
            retention=settings.task_retention,
            parallel_tools=settings.tool_parallel,
            workspace_running=settings.task_running_limit,
        ),
        jobs={TaskKind.SUMMARY: context.run_summary_job},
        metrics=prometheus,
        tracer=tracer,
    )

    async def close_hasher() -> None:
        hasher.close()

    async def load_password_list() -> None:
        await asyncio.to_thread(password_policy.load)

    task_watches = TaskWatches(
        journal=tasks,
        sessions=sessions,
        heartbeat=settings.events_heartbeat,
        queue_size=settings.events_queue_size,
        poll=TASK_WATCH_POLL,
    )
    servicers: dict[str, object] = {
        "cortex.auth.v1.AuthService": AuthService(identity),
        "cortex.sessions.v1.SessionService": SessionService(identity),
        "cortex.sessions.v1.WorkspaceService": WorkspaceService(workspaces),
        "cortex.events.v1.EventService": events,
        "cortex.context.v1.ConversationService": ConversationService(conversations, replies),
        "cortex.context.v1.ContextService": ContextService(context),
        "cortex.context.v1.MemoryService": MemoryService(memories),
        "cortex.experts.v1.ExpertService": ExpertService(
            experts=experts, tasks=tasks, watches=task_watches, clock=clock
        ),
        "cortex.experts.v1.ToolService": ToolService(
            Tools(uow=database.unit_of_work, invoker=tool_invoker)
        ),
    }
    health = HealthReporter(
        list(servicers),
        [name for name in service_names() if name not in servicers],
        tool_servers=[source.server for source in mcp_sources],
    )
    access_log = AccessLog(settings.log_format) if settings.access_log else None
    background = [
        Loop(
            "database-watch",
            every(
                DATABASE_WATCH_INTERVAL,
                lambda: health.check_database(database),
                wait_first=True,  # the migrations have just reached it
            ),
        ),
        Loop("event-relay", relay.drain_and_wait),
        Loop("tasks", runner.run),
        Loop("task-sweeper", every(TASK_SWEEP_INTERVAL, runner.sweep)),
        Loop(
            "memory-sweeper",
            every(settings.memory_sweep_interval, memories.sweep, wait_first=True),
        ),
        Loop(
            "provider-health",
            every(PROVIDER_HEALTH_INTERVAL, lambda: health.publish_providers(chain.states)),
        ),
    ]
    limiter = _limiter(settings, redis)
    if redis is None:  # Redis expires the limits' keys itself
        background.append(
            Loop("limits-sweeper", every(LIMITS_SWEEP_INTERVAL, limiter.sweep, wait_first=True))
        )
    if access_log is not None:
        background.append(Loop("access-log", access_log.run))
    if signals_loop is not None:
        background.append(signals_loop)
    # One owner task per MCP server: its session lives and reconnects in this loop.
    background += [Loop(source.loop_name, source.run) for source in mcp_sources]

    app = App(
        settings=settings,
        clock=clock,
        database=database,
        health=health,
        streams=StreamRegistry(
            hub,
            max_calls=settings.max_concurrent_rpcs,
            max_waiting=settings.max_pending_requests,
            task_watches=task_watches,
        ),
        access_log=access_log,
        authenticator=authenticator,
        servicers=servicers,
        tool_invoker=tool_invoker,
        limiter=limiter,
        background=background,
        supervisor=supervisor,
        experts=experts,
        tasks=tasks,
        drainers=[runner.drain],
        starters=[
            lambda: check_redis(redis, settings.redis_url),
            hasher.warm_up,
            load_password_list,
            *(source.start for source in tool_invoker.sources),
        ],
        closers=[
            *(source.close for source in tool_invoker.sources),
            close_hasher,
            chain.aclose,
            *(c.aclose for c in expert_chains.values()),
            signals.close,
            hub.aclose,
            task_watches.aclose,
            event_log.close,
            cache.close,
            *([redis.aclose] if redis is not None else []),
        ],
        tracer_provider=provider_of_traces,
        tracer=tracer,
        metrics=metrics,
    )
    if prometheus is not None:
        registry = prometheus.registry

        async def start_metrics() -> None:
            from cortex_core.adapters.metrics import serve_metrics

            try:
                endpoint = app.metrics_endpoint = serve_metrics(settings.metrics_address, registry)
            except OSError as exc:
                raise StartupError(
                    f"CORTEX_METRICS_ADDRESS={settings.metrics_address!r}: cannot listen"
                    f" ({exc.strerror or exc})"
                ) from None
            host = settings.metrics_address.rpartition(":")[0]
            log.info("metrics on http://%s:%d/metrics", host, endpoint.port)

        async def stop_metrics() -> None:
            if app.metrics_endpoint is not None:
                await asyncio.to_thread(app.metrics_endpoint.close)
                app.metrics_endpoint = None

        app.starters.append(start_metrics)
        app.closers.append(stop_metrics)
    if provider_of_traces is not None:
        traces = provider_of_traces

        async def stop_tracing() -> None:
            # Flushes the batch of spans not exported yet (on a thread: it waits).
            await asyncio.to_thread(traces.shutdown)

        app.closers.append(stop_tracing)
    return app


def _tracer_provider(settings: Settings) -> TracerProvider | None:
    """The SDK's provider when tracing is wanted (``adapters.tracing``), else None."""
    from cortex_core.adapters import tracing

    if not tracing.tracing_wanted(settings.tracing, os.environ):
        return None
    try:
        return tracing.tracer_provider(os.environ)
    except tracing.TracingConfigError as exc:
        raise SettingsError(str(exc)) from None


def _instrument(provider: TracerProvider, database: Database, redis: Redis | None) -> None:
    from cortex_core.adapters import tracing

    if isinstance(database, SqlDatabase):
        tracing.instrument_engine(database.engine, provider)
    if redis is not None:
        tracing.instrument_redis(redis, provider)


def _redis(settings: Settings) -> Redis | None:
    """The process's one Redis client (a bounded pool), shared by every Redis adapter."""
    if not settings.redis_url:
        return None
    from cortex_core.adapters.redis.client import redis_client

    return redis_client(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout,
    )


def _expert_chains(settings: Settings, local: LlmProvider) -> dict[str, FallbackProvider]:
    """A provider chain per expert that names its ``providers`` (the others use
    the server's chain): the LLM configuration's links, in the expert's order."""
    links = {p.name: p for p in settings.llm.providers}
    return {
        expert.id: chain_from_config(
            LlmConfig(
                providers=tuple(links[name] for name in expert.providers),
                retries=settings.llm.retries,
                backoff=settings.llm.backoff,
                breaker=settings.llm.breaker,
            ),
            local=local,
        )
        for expert in settings.experts
        if expert.providers
    }


def _task_signals(redis: Redis | None) -> tuple[TaskSignals, Loop | None]:
    """The signals, and with Redis the loop that relays other replicas' signals."""
    if redis is not None:
        from cortex_core.adapters.redis.task_signals import RedisTaskSignals

        shared = RedisTaskSignals(redis)
        return shared, Loop("task-signals", shared.listen)
    return LocalTaskSignals(), None


def _event_log(
    settings: Settings, redis: Redis | None, database: Database
) -> tuple[EventLog, SqlEventLog | None]:
    """Redis Streams when Redis is configured (the event store is its outbox), else
    the event store itself, returned twice (the relay applies its retention)."""
    retention = timedelta(seconds=settings.events_retention)
    if redis is not None:
        from cortex_core.adapters.redis.event_log import RedisEventLog

        # A blocking read holds a pooled connection: keep it well under the timeout.
        shared = RedisEventLog(
            redis,
            max_length=settings.events_max_length,
            max_age=retention,
            max_block=settings.redis_timeout / 2,
        )
        return shared, None
    store = SqlEventLog(
        database.unit_of_work, max_length=settings.events_max_length, max_age=retention
    )
    return store, store


def _cache(redis: Redis | None) -> Cache:
    if redis is not None:
        from cortex_core.adapters.redis.cache import RedisCache

        return RedisCache(redis)
    return InMemoryCache()


def _limiter(settings: Settings, redis: Redis | None) -> CallLimiter:
    """The call limits over ``limits``' in-process storage, or over Redis through the
    process's one connection pool (no second pool: the storage's client wraps it)."""
    from limits.aio.storage import RedisStorage, Storage

    from cortex_core.api.limits import SweptMemoryStorage

    storage: Storage
    if redis is not None:
        scheme = urlsplit(settings.redis_url).scheme
        uri = {"unix": "async+redis+unix"}.get(scheme, "async+" + scheme) + "://"
        storage = RedisStorage(
            uri,
            implementation="redispy",
            key_prefix=settings.rate_prefix,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
    else:
        storage = SweptMemoryStorage()
    return CallLimiter(
        storage,
        user_rate=settings.rate_user,
        workspace_rate=settings.rate_workspace,
        max_streams_per_user=settings.max_streams_per_user,
    )


def _throttle(settings: Settings, redis: Redis | None, clock: Clock) -> LoginThrottle:
    if redis is not None:
        from cortex_core.adapters.redis.throttle import RedisLoginThrottle

        # Fails closed with UNAVAILABLE when Redis is down (the client's timeouts bound it).
        return RedisLoginThrottle(redis, clock=clock, policies=_throttle_policies(settings))
    return InMemoryLoginThrottle(clock=clock, policies=_throttle_policies(settings))


def _throttle_policies(settings: Settings) -> ThrottlePolicies:
    defaults = ThrottlePolicies()
    return ThrottlePolicies(
        account=dataclasses.replace(
            defaults.account, free_failures=settings.login_account_attempts
        ),
        address=dataclasses.replace(
            defaults.address, free_failures=settings.login_address_attempts
        ),
        register=dataclasses.replace(
            defaults.register, free_failures=settings.register_address_attempts
        ),
    )


def prepare_data_dir(path: Path) -> None:
    """Create the data dir for its owner only (0700); raise :class:`StartupError`
    naming ``CORTEX_DATA_DIR`` unless it is a directory this process can write."""
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(20, "it exists and is not a directory")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(13, "this process may not write to it")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(
            f"CORTEX_DATA_DIR={str(path)!r} is not a usable directory: {reason}"
        ) from None


def database_unreachable(settings: Settings, error: errors.Unavailable) -> StartupError:
    """One line for a database that does not answer at start: the variable that
    names it and its address, never its password."""
    if not settings.database_url:
        return StartupError(
            f"CORTEX_DATA_DIR={str(settings.data_dir)!r}: the embedded database cannot be"
            f" opened there ({_root_cause(error)})"
        )
    return StartupError(
        f"CORTEX_DATABASE_URL: the database at {public_address(settings.database_url)} does not"
        f" answer ({_root_cause(error)})"
    )


async def check_redis(client: Redis | None, url: str) -> None:
    """Raise :class:`StartupError` naming ``CORTEX_REDIS_URL`` unless the shared
    client gets an answer to a PING (an outage after start is survived; a wrong
    address at start is not)."""
    if client is None:
        return
    from redis.exceptions import RedisError

    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise StartupError(
            f"CORTEX_REDIS_URL: Redis at {public_address(url)} does not answer ({exc})"
        ) from None


def public_address(url: str) -> str:
    """``host:port/path`` of a URL, without user or password (safe to print)."""
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return parts.path.removeprefix("/")  # sqlite:///relative, sqlite:////absolute
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.hostname or 'localhost'}{port}{parts.path}"


def _root_cause(error: BaseException) -> str:
    cause: BaseException = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    orig = getattr(cause, "orig", None)  # a SQLAlchemy wrapper: the driver's own error
    text = str(orig if orig is not None else cause) or type(cause).__name__
    return text.splitlines()[0]
