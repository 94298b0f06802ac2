"""The composition root: the only place that builds engines, clients and servers.

Importing this module does nothing; :func:`bootstrap` builds an :class:`App`
from :class:`~cortex_core.settings.Settings`, choosing the embedded default or
the production adapter for every port. It reads the signing key from the data
dir once, at start (see ``load_key_ring``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cortex_core.adapters.cache import InMemoryCache
from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.events.memory import InMemoryEventLog
from cortex_core.adapters.llm.config import chain_from_config
from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.adapters.security.keys import load_key_ring
from cortex_core.adapters.security.password_policy import PasswordPolicy
from cortex_core.adapters.security.passwords import Argon2PasswordHasher
from cortex_core.adapters.security.throttle import InMemoryLoginThrottle
from cortex_core.adapters.security.throttle_policy import ThrottlePolicies
from cortex_core.adapters.security.tokens import JwtAccessTokenCodec
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.tokens import EstimatedTokenCounter
from cortex_core.api.access_log import AccessLog
from cortex_core.api.auth_service import AuthService
from cortex_core.api.context_service import ContextService
from cortex_core.api.conversation_service import ConversationService
from cortex_core.api.event_encoding import encode
from cortex_core.api.event_service import EventService
from cortex_core.api.health import HealthReporter
from cortex_core.api.memory_service import MemoryService
from cortex_core.api.registry import service_names
from cortex_core.api.session_service import SessionService
from cortex_core.api.streams import StreamRegistry
from cortex_core.api.workspace_service import WorkspaceService
from cortex_core.domain.changes import Change
from cortex_core.domain.context_window import Candidate, ItemKind
from cortex_core.ports import (
    Cache,
    Clock,
    Database,
    EventLog,
    LlmProvider,
    LoginThrottle,
    UnitOfWork,
)
from cortex_core.services import reactions
from cortex_core.services.authentication import Authenticator
from cortex_core.services.context import ContextManager
from cortex_core.services.conversations import Conversations
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.event_hub import EventHub
from cortex_core.services.event_relay import EventRelay
from cortex_core.services.identity import Identity
from cortex_core.services.memories import Memories, MemorySweeper
from cortex_core.services.replies import Replies
from cortex_core.services.session_guard import SessionWatcher
from cortex_core.services.subscriptions import Subscriptions
from cortex_core.services.workspaces import Workspaces
from cortex_core.settings import Settings, SettingsError

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

PROVIDER_HEALTH_INTERVAL = 2.0


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
    starters: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)
    background: list[Callable[[], Coroutine[Any, Any, None]]] = dataclasses.field(
        default_factory=list
    )
    closers: list[Callable[[], Awaitable[None]]] = dataclasses.field(default_factory=list)
    # Ends a stream with UNAUTHENTICATED on logout, revocation or token expiry.


def bootstrap(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Clock | None = None,
    provider: LlmProvider | None = None,
) -> App:
    """Build the application for ``settings``; ports may be overridden by tests."""
    clock = clock or SystemClock()
    database = database or SqlDatabase.from_url(settings.effective_database_url)
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
    event_log = _event_log(settings, redis)
    hub = EventHub(event_log)
    bus = EventBus()
    relay = EventRelay(log=event_log, hub=hub, uow=database.unit_of_work, encode=encode)
    bus.subscribe(Change, relay.publish)
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
    sweeper = MemorySweeper(memories, settings.memory_sweep_interval)
    counter = EstimatedTokenCounter()
    chain = chain_from_config(
        settings.llm, local=LocalDevelopmentProvider(delay=settings.local_llm_delay)
    )
    provider = provider or chain
    health = HealthReporter(service_names())

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

    context = ContextManager(
        uow=database.unit_of_work,
        clock=clock,
        counter=counter,
        provider=provider,
        default_budget=settings.context_budget,
        cache=cache,
        events=bus,
        memories=relevant_memories,
    )
    conversations = Conversations(uow=database.unit_of_work, clock=clock, events=bus)
    replies = Replies(
        uow=database.unit_of_work,
        clock=clock,
        events=bus,
        counter=counter,
        provider=provider,
        context=context,
        sessions=sessions,
        max_active=settings.max_active_replies,
    )

    async def close_hasher() -> None:
        hasher.close()

    async def load_password_list() -> None:
        await asyncio.to_thread(password_policy.load)

    return App(
        settings=settings,
        clock=clock,
        database=database,
        health=health,
        streams=StreamRegistry(
            hub,
            max_calls=settings.max_concurrent_rpcs,
            max_waiting=settings.max_pending_requests,
        ),
        access_log=AccessLog(settings.log_format) if settings.access_log else None,
        authenticator=authenticator,
        servicers={
            "cortex.auth.v1.AuthService": AuthService(identity),
            "cortex.sessions.v1.SessionService": SessionService(identity),
            "cortex.sessions.v1.WorkspaceService": WorkspaceService(workspaces),
            "cortex.events.v1.EventService": events,
            "cortex.context.v1.ConversationService": ConversationService(conversations, replies),
            "cortex.context.v1.ContextService": ContextService(context),
            "cortex.context.v1.MemoryService": MemoryService(memories),
        },
        background=[
            relay.run,
            context.run_summary_jobs,
            sweeper.run,
            lambda: health.watch_providers(chain.states, PROVIDER_HEALTH_INTERVAL),
        ],
        starters=[hasher.warm_up, load_password_list],
        closers=[
            close_hasher,
            chain.aclose,
            hub.aclose,
            event_log.close,
            cache.close,
            *([redis.aclose] if redis is not None else []),
        ],
    )


def _redis(settings: Settings) -> Redis | None:
    """The process's one Redis client (a bounded pool), shared by every Redis adapter."""
    if not settings.redis_url:
        return None
    from cortex_core.adapters.redis_client import redis_client

    return redis_client(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout,
    )


def _event_log(settings: Settings, redis: Redis | None) -> EventLog:
    retention = timedelta(seconds=settings.events_retention)
    if redis is not None:
        from cortex_core.adapters.events.redis_streams import RedisEventLog

        # A blocking read holds a pooled connection: keep it well under the timeout.
        return RedisEventLog(
            redis,
            max_length=settings.events_max_length,
            max_age=retention,
            max_block=settings.redis_timeout / 2,
        )
    return InMemoryEventLog(max_length=settings.events_max_length, max_age=retention)


def _cache(redis: Redis | None) -> Cache:
    if redis is not None:
        from cortex_core.adapters.redis_cache import RedisCache

        return RedisCache(redis)
    return InMemoryCache()


def _throttle(settings: Settings, redis: Redis | None, clock: Clock) -> LoginThrottle:
    if redis is not None:
        from cortex_core.adapters.security.redis_throttle import RedisLoginThrottle

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
