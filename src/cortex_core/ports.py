"""The swappable parts of Cortex Core, as ``typing.Protocol``s.

Each port has an in-memory or embedded implementation in ``adapters`` that is
both the default of ``make run`` and the double used by tests.
"""

from __future__ import annotations

import builtins
import enum
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from cortex_core.domain.access_tokens import AccessClaims, IssuedToken
from cortex_core.domain.conversations import Conversation, Message, Summary
from cortex_core.domain.event_records import (
    EventEnvelope,
    EventRead,
    EventRecord,
    NewEvent,
    Relayed,
)
from cortex_core.domain.identity import (
    Membership,
    MemberView,
    RefreshToken,
    Role,
    Session,
    User,
    Workspace,
)
from cortex_core.domain.llm import Chunk, PromptMessage
from cortex_core.domain.memories import Memory, MemoryKind, ScoredMemory, SearchQuery
from cortex_core.domain.paging import Page, PageRequest
from cortex_core.domain.tasks import (
    Fence,
    JournalDraft,
    JournalEntry,
    JournalRead,
    Task,
    TaskKind,
    TaskState,
)
from cortex_core.domain.tools import ToolCall, ToolContext, ToolSpec


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Insert ``user``; raise AlreadyExists for a taken email (case-insensitive)."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def get_by_email(self, email: str) -> User | None:
        """Look up by email, case-insensitively."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str, now: datetime) -> None: ...


class WorkspaceRepository(Protocol):
    async def add(self, workspace: Workspace) -> None: ...

    async def get(self, workspace_id: str) -> Workspace | None: ...

    async def update(self, workspace: Workspace) -> None: ...

    async def delete(self, workspace_id: str) -> None:
        """Delete the workspace and everything in it (memberships cascade)."""
        ...

    async def list_for_user(self, user_id: str, page: PageRequest) -> Page[Workspace]:
        """The workspaces ``user_id`` is a member of, oldest first."""
        ...

    async def add_member(self, membership: Membership) -> None:
        """Insert; raise AlreadyExists when the user is already a member."""
        ...

    async def set_member_role(self, workspace_id: str, user_id: str, role: Role) -> None: ...

    async def remove_member(self, workspace_id: str, user_id: str) -> None: ...

    async def get_membership(self, workspace_id: str, user_id: str) -> Membership | None: ...

    async def get_as_member(
        self, workspace_id: str, user_id: str
    ) -> tuple[Workspace, Membership] | None:
        """The workspace and ``user_id``'s membership of it, in one read; None when
        either is missing."""
        ...

    async def list_members(self, workspace_id: str, page: PageRequest) -> Page[MemberView]:
        """Members with their user's email and display name, oldest first."""
        ...

    async def count_owners(self, workspace_id: str) -> int: ...


class SessionRepository(Protocol):
    async def add(self, session: Session) -> None: ...

    async def get(self, session_id: str) -> Session | None: ...

    async def list_for_user(self, user_id: str, page: PageRequest) -> Page[Session]:
        """The user's sessions that are not revoked, most recently used first."""
        ...

    async def touch(self, session_id: str, now: datetime) -> None:
        """Record a use of the session (``last_use_time``)."""
        ...

    async def revoke(self, session_id: str, now: datetime) -> bool:
        """Revoke one session; False when it was already revoked."""
        ...

    async def revoke_all_for_user(
        self, user_id: str, now: datetime, *, keep: str = ""
    ) -> list[str]:
        """Revoke every active session of the user but ``keep``; return the ids revoked."""
        ...

    async def add_refresh_token(self, token: RefreshToken) -> None: ...

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None: ...

    async def consume_refresh_token(self, token_id: str, now: datetime) -> bool:
        """Mark the token used, atomically; False when it was already used (a reuse)."""
        ...


class UnitOfWork(Protocol):
    """One transaction over all repositories; nothing is kept unless ``commit`` runs."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def workspaces(self) -> WorkspaceRepository: ...

    @property
    def sessions(self) -> SessionRepository: ...

    @property
    def conversations(self) -> ConversationRepository: ...

    @property
    def memories(self) -> MemoryRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def tasks(self) -> TaskRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


class RevocationListener(Protocol):
    """Told, in-process, the moment sessions are revoked (e.g. to drop cached tokens)."""

    def sessions_revoked(self, session_ids: Sequence[str]) -> None: ...


class Database(Protocol):
    """The storage engine's lifecycle: migrations, liveness, disposal."""

    async def migrate(self) -> None:
        """Apply every pending migration; idempotent."""
        ...

    async def ping(self) -> None:
        """Round-trip to the database; raise Unavailable when it cannot be reached."""
        ...

    async def dispose(self) -> None: ...

    def unit_of_work(self) -> UnitOfWork: ...


# --- identity and security -------------------------------------------------


class PasswordHasher(Protocol):
    """argon2id hashing on a bounded worker pool (never on the event loop)."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool:
        """True when ``password`` matches; False (never an exception) when it does not."""
        ...

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with parameters older than the current ones."""
        ...

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of one real verification (for unknown accounts)."""
        ...


class PasswordPolicy(Protocol):
    def check(self, password: str, *, field: str = "password", email: str = "") -> None:
        """Raise InvalidArgument (BadRequest on ``field``) for a password not allowed
        (too short, too long, too common, or the account's own email)."""
        ...


class AccessTokenCodec(Protocol):
    """Mints and verifies short-lived access tokens (JWT)."""

    def issue(self, *, user_id: str, session_id: str, now: datetime) -> IssuedToken: ...

    def verify(self, token: str, *, now: datetime) -> AccessClaims:
        """Return the claims; raise Unauthenticated (TOKEN_INVALID or TOKEN_EXPIRED)."""
        ...


class AttemptOutcome(enum.Enum):
    """How a throttled attempt ended (see ``LoginThrottle.settle``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"  # an outage or a cancelled call: counts nothing


class LoginThrottle(Protocol):
    """Growing delays per account, per client address and per sign-up address.

    Keys are built by ``adapters.security.throttle_policy`` (``account:``,
    ``address:``, ``register:``); each kind has its own policy.
    """

    async def check(self, keys: Sequence[str]) -> None:
        """Raise ResourceExhausted(reason LOGIN_THROTTLED or RATE_LIMITED,
        retry_after) while any key waits; count nothing."""
        ...

    async def reserve(self, keys: Sequence[str]) -> str:
        """Take a reservation on every key *before* the expensive work (hashing) and
        return its token. Raises like ``check`` while a key is locked; waits while
        failures plus reservations in flight already reach a key's free attempts
        (so parallel guesses cannot outrun the lock). ``register:`` keys are
        counted here."""
        ...

    async def settle(self, keys: Sequence[str], token: str, outcome: AttemptOutcome) -> None:
        """End the reservation: FAILED counts a failure; SUCCEEDED forgets the
        account keys and gives the attempt back to the address keys; ABANDONED
        counts nothing. Never raises."""
        ...


# --- conversations, context and models -------------------------------------------


class ConversationRepository(Protocol):
    """Conversations, messages and summaries; ``uow.conversations``."""

    async def add(self, conversation: Conversation) -> None: ...

    async def get(self, workspace_id: str, conversation_id: str) -> Conversation | None: ...

    async def update(self, conversation: Conversation) -> None: ...

    async def delete(self, conversation_id: str) -> None:
        """Delete it with its messages, summaries and pending jobs."""
        ...

    async def list_in_workspace(self, workspace_id: str, page: PageRequest) -> Page[Conversation]:
        """Newest first (by creation)."""
        ...

    async def append_message(self, message: Message) -> Message:
        """Store ``message`` as the conversation's next one (its ``position`` is
        assigned here, atomically) and bump the conversation's counters. Raises
        AlreadyExists when its idempotency key was used in the conversation (the
        unit of work then only rolls back)."""
        ...

    async def set_tool_calls(
        self, conversation_id: str, message_id: str, calls: tuple[ToolCall, ...]
    ) -> None:
        """Replace the ``tool_calls`` of a stored message (their states change when a
        person decides on pending calls; nothing else of a message ever changes)."""
        ...

    async def get_message_by_key(
        self, conversation_id: str, idempotency_key: str
    ) -> Message | None: ...

    async def list_messages(
        self,
        conversation_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int,
        newest_first: bool = False,
    ) -> list[Message]:
        """Messages with ``after < position < before``, in the order asked."""
        ...

    async def reply_to(self, conversation_id: str, user_message_id: str) -> Message | None:
        """The stored assistant message answering ``user_message_id``, if any."""
        ...

    async def record_usage(
        self, workspace_id: str, conversation_id: str, prompt: int, completion: int
    ) -> None:
        """Add a reply's tokens to the conversation's and the workspace's totals."""
        ...

    async def claim_reply(
        self, conversation_id: str, reply_id: str, now: datetime, lease_until: datetime
    ) -> str | None:
        """Take the conversation's reply lease (None), or return the running reply's id."""
        ...

    async def release_reply(self, conversation_id: str, reply_id: str) -> None: ...

    async def latest_summary(self, conversation_id: str) -> Summary | None: ...

    async def add_summary(self, summary: Summary) -> None: ...


class TokenCounter(Protocol):
    def count(self, text: str) -> int:
        """Tokens ``text`` costs in a prompt (an estimate unless a real tokenizer is used)."""
        ...


class LlmProvider(Protocol):
    """A chat-completion model that streams."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    def stream(
        self,
        messages: Sequence[PromptMessage],
        *,
        max_tokens: int,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[Chunk, None]:
        """Stream the reply: text chunks and complete tool calls (named by
        ``ToolSpec.id``; a call the model got wrong, an unknown name or arguments
        that are not a JSON object, carries ``ToolCall.error``), then usage (when
        known) and a finish reason (TOOL_CALLS when the model stopped to call
        tools). Closing the iterator cancels the request.

        ``messages`` is history as stored: a call may lack its result, a result
        its call; a provider whose API refuses that sends
        ``domain.llm.well_formed(messages)``."""
        ...


class ToolSource(Protocol):
    """The tools of one server: the built-in tools, or one MCP server.

    ``tools()`` is a snapshot that the source keeps current (an MCP server's
    ``list_changed`` refreshes it). While an MCP server is down it keeps the last
    listing, so calls to its tools raise ``Unavailable`` rather than look unknown;
    it is empty until the server was reached once.
    """

    @property
    def server(self) -> str:
        """``cortex`` for the built-ins, else the configured MCP server name."""
        ...

    def tools(self) -> Sequence[ToolSpec]: ...

    async def call(
        self,
        tool: ToolSpec,
        arguments: Mapping[str, Any],
        context: ToolContext,
        *,
        time_limit: float,
    ) -> Mapping[str, Any]:
        """Run one call and return its structured output.

        Raises ``errors.ToolFailed`` (the tool ran and reported an error),
        ``errors.DeadlineExceeded`` (reason TOOL_TIMEOUT, after ``time_limit``
        seconds) or ``errors.Unavailable`` (reason TOOL_UNAVAILABLE, with
        ``retry_after``). Cancelling the awaiting task cancels the call on the
        server (the transport's own way) before the cancellation propagates.
        """
        ...

    async def start(self) -> None:
        """Begin connecting (never waits for the server to answer)."""
        ...

    async def close(self) -> None: ...


class OutboxRepository(Protocol):
    """The event store: every event is written here in the unit of work of the
    change it reports (``uow.outbox``), so a committed change always has its event
    and a rolled-back one never has. ``adapters/sql/outbox.py`` explains the layout.

    With no external event log this table *is* the log (``adapters/sql/event_log.py``
    reads it); with Redis it is the outbox in front of it: the relay copies what is
    not relayed yet and acknowledges it (the rows go)."""

    async def append(self, events: Sequence[NewEvent]) -> builtins.list[EventRecord]:
        """Number each event after the last one of its stream and store it; return
        them as records. Concurrent writers of one stream wait for each other's
        commit here, so a stream's sequences follow commit order with no gap (call
        it last, right before the commit). Streams are locked in sorted order."""
        ...

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        """Stored events of ``stream`` after ``after_sequence``, ascending (as
        :meth:`EventLog.read`)."""
        ...

    async def last_sequences(self, streams: Sequence[str]) -> dict[str, int]:
        """The last sequence given out per stream (0 for a stream never written)."""
        ...

    async def pending(self, limit: int) -> builtins.list[EventRecord]:
        """Up to ``limit`` events not acknowledged as relayed, by stream then sequence
        (each stream's run starts right after its last acknowledged event)."""
        ...

    async def acknowledge(self, positions: Mapping[str, int]) -> None:
        """The external log holds every event of each stream up to its position:
        remember that and delete those rows."""
        ...

    async def trim(self, *, before: datetime | None, max_length: int | None) -> int:
        """Retention when this table is the log: delete events older than ``before``
        and all but the last ``max_length`` of each stream; how many went."""
        ...


# --- events (see services/event_hub.py) ----------------------------------------


class EventLog(Protocol):
    """Durable, per-stream append-only log of events: the source of truth of the event stream.

    Shared by every replica: sequences are allocated atomically by the log, so two
    processes appending to one stream never collide. Every method raises
    ``Unavailable(reason="EVENT_LOG_UNAVAILABLE")`` when the backend cannot be reached,
    promptly (never hangs forever). Retention (by age and by length) is configured on
    the implementation and applied on append.
    """

    async def append(
        self, stream: str, event_id: str, envelope: EventEnvelope, payload: bytes, now: datetime
    ) -> EventRecord:
        """Store one event; its sequence is the stream's previous last sequence + 1."""
        ...

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        """Up to ``limit`` records with ``sequence > after_sequence``, ascending.

        ``limit`` 0 returns no records, only ``oldest_available``/``last_sequence``.
        ``after_sequence`` outside 0 … ``MAX_SEQUENCE`` raises ValueError (a caller's
        bug, never taken for an outage).
        """
        ...

    async def wait(self, cursors: Mapping[str, int], max_wait: float) -> set[str]:
        """Block until a stream in ``cursors`` has a record after its cursor.

        Returns the streams that have one (a wake-up hint, not a read), or an empty
        set after at most ``max_wait`` seconds (possibly earlier: callers loop).
        """
        ...

    async def close(self) -> None:
        """Release connections; pending ``wait`` calls return."""
        ...


class RelayedLog(EventLog, Protocol):
    """An event log the relay copies the event store into (Redis; the in-process
    log in tests). Each stored event is taken at most once, in stored order."""

    async def append_once(self, stored: EventRecord, *, after_gap: bool = False) -> Relayed:
        """Append ``stored`` (its ``sequence`` is the event store's) unless the log
        took it already (``Relayed(None)``: a repeat after a crash between an append
        and its acknowledgement, by any replica). When the log has not taken the
        stored event before it, nothing is appended and ``Relayed(behind=n)`` says
        which stored sequence it took last, unless ``after_gap``: the caller knows
        the ones before were acknowledged (the log lost them), so it appends.
        The appended record has the log's own sequence."""
        ...


# --- memories and caches (see services/memories.py) ------------------------------


class MemoryRepository(Protocol):
    """Durable memories; ``uow.memories``.

    Every read takes ``now`` and never returns a memory with ``expire_time <= now``,
    whether or not the sweeper has deleted it yet.
    """

    async def add(self, memory: Memory) -> None:
        """Insert the memory with its source message names (and index it for search)."""
        ...

    async def get(self, workspace_id: str, memory_id: str, now: datetime) -> Memory | None: ...

    async def list(
        self, workspace_id: str, kind: MemoryKind | None, page: PageRequest, now: datetime
    ) -> Page[Memory]:
        """Newest first; the page token is bound to ``kind`` (another kind raises
        InvalidArgument INVALID_PAGE_TOKEN)."""
        ...

    async def search(
        self,
        workspace_id: str,
        query: SearchQuery,
        kind: MemoryKind | None,
        *,
        offset: int,
        limit: int,
        now: datetime,
        include_stale: bool = True,
    ) -> builtins.list[ScoredMemory]:
        """Full-text matches, most relevant first (ties: newest first)."""
        ...

    async def delete(self, workspace_id: str, memory_id: str) -> bool:
        """Delete one memory; False when there was none."""
        ...

    async def delete_expired(self, now: datetime, limit: int) -> builtins.list[Memory]:
        """Delete up to ``limit`` memories with ``expire_time <= now``; return them."""
        ...

    async def missing_messages(self, workspace_id: str, names: Sequence[str]) -> builtins.list[str]:
        """Of ``names`` (message resource names), those with no stored message."""
        ...

    async def mark_stale_derived_from(self, message_names: Sequence[str]) -> builtins.list[Memory]:
        """Provenance: flag every memory derived from one of these messages as stale;
        return the memories newly flagged. Call it in the unit of work that deletes
        the messages."""
        ...

    async def mark_stale_derived_from_conversation(
        self, conversation_name: str
    ) -> builtins.list[Memory]:
        """Provenance: like :meth:`mark_stale_derived_from` for every message of
        ``workspaces/{w}/conversations/{c}`` (call it from DeleteConversation)."""
        ...

    async def delete_derived_from_conversation(
        self, conversation_name: str
    ) -> builtins.list[Memory]:
        """Provenance, the strict variant: delete every memory derived from a message
        of the conversation; return them."""
        ...


class Cache(Protocol):
    """Hot reads (e.g. context windows; keys in ``domain/cache_keys.py``).

    Best effort: a miss is always allowed, so callers must be able to rebuild the
    value. Writers invalidate with :meth:`delete` / :meth:`delete_prefix` after
    their commit. Never raises for a backend outage (implementations fall back).
    """

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for at most ``ttl`` seconds."""
        ...

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> None:
        """Drop every key that starts with ``prefix``."""
        ...

    async def close(self) -> None: ...


# --- tasks (see services/tasks.py and services/task_runner.py) --------------------


class TaskRepository(Protocol):
    """Tasks, their attempts and their journal; ``uow.tasks``. The task table is
    the queue: claims are leases on rows, and every write of a running attempt is
    fenced (see :class:`~cortex_core.domain.tasks.Fence`)."""

    async def add(self, task: Task) -> None:
        """Insert a new task (QUEUED, no attempts); raise AlreadyExists when its
        ``request_id`` is taken in the workspace."""
        ...

    async def get(self, workspace_id: str, task_id: str) -> Task | None:
        """A task of any kind in the workspace, with its attempts and pending request."""
        ...

    async def get_by_id(self, task_id: str) -> Task | None: ...

    async def by_request_id(
        self, workspace_id: str, request_id: str, since: datetime
    ) -> Task | None:
        """The task created in the workspace with ``request_id`` at or after ``since``."""
        ...

    async def find_open(self, workspace_id: str, kind: TaskKind, subject: str) -> Task | None:
        """A QUEUED or RUNNING internal job of ``kind`` about ``subject`` (its
        ``expert_id`` column: e.g. the conversation of a summary job)."""
        ...

    async def count_open(self, kind: TaskKind) -> int:
        """QUEUED or RUNNING tasks of ``kind`` in every workspace."""
        ...

    async def list(
        self,
        workspace_id: str,
        page: PageRequest,
        *,
        state: TaskState | None = None,
        expert_id: str = "",
    ) -> Page[Task]:
        """Expert tasks of the workspace, newest first; the page token is bound to
        the filters (others raise InvalidArgument INVALID_PAGE_TOKEN)."""
        ...

    async def count_active(self, workspace_id: str) -> tuple[int, int]:
        """(queued, running) expert tasks of the workspace."""
        ...

    async def claim_next(
        self, now: datetime, kinds: Sequence[TaskKind], *, running_limit: int = 0
    ) -> Task | None:
        """A task a worker may start now: QUEUED with no ``next_attempt_time`` in the
        future, or RUNNING with an expired lease (its worker is gone); oldest
        first. On PostgreSQL the row is locked (``FOR UPDATE SKIP LOCKED``) until
        the unit of work ends, so concurrent claimers skip it; on SQLite the claim
        runs under the write lock. The caller writes the claim with :meth:`save`
        (fenced) in the same unit of work.

        ``running_limit`` (0: none): a QUEUED expert task is claimable only while
        its workspace has fewer RUNNING expert tasks with a live lease, counted
        under a per-workspace lock held until the unit of work ends, so
        concurrent claimers on any replica never exceed it."""
        ...

    async def count_queued(self, kinds: Sequence[TaskKind]) -> int:
        """QUEUED tasks of ``kinds`` in every workspace (the queue depth)."""
        ...

    async def save(self, task: Task, *, expected: Fence) -> bool:
        """Write the task's mutable fields (not ``last_sequence``) and its attempts
        numbered ``expected.attempt_count`` and later, only if the row still
        matches ``expected``; False (nothing written) when it does not."""
        ...

    async def request_cancel(self, task_id: str) -> bool:
        """Flag a RUNNING task for cancellation; False when it is not running."""
        ...

    async def heartbeat(
        self, task_id: str, owner: str, attempt: int, lease_until: datetime
    ) -> bool | None:
        """Extend a running attempt's lease. None when the lease is lost (another
        worker, another state); else whether a cancel was requested."""
        ...

    async def journal(
        self, task_id: str, drafts: Sequence[JournalDraft], now: datetime, *, fence: Fence | None
    ) -> builtins.list[JournalEntry]:
        """Append entries numbered after the task's ``last_sequence`` (bumped
        atomically), only if the row matches ``fence`` (None: unconditionally);
        an empty list when the fence fails. A TASK snapshot is stored with its own
        sequence as ``last_sequence``. Call it in the unit of work of the change
        that produced the entries. Journals longer than the retention cap
        lose their oldest entries (see the adapter)."""
        ...

    async def read_journal(self, task_id: str, after_sequence: int, limit: int) -> JournalRead:
        """Up to ``limit`` entries with ``sequence > after_sequence``, ascending."""
        ...

    async def expired_inputs(self, now: datetime, limit: int) -> builtins.list[Task]:
        """INPUT_REQUIRED tasks whose request expired at or before ``now``."""
        ...

    async def delete_completed(self, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` terminal tasks completed before ``before`` (their
        attempts and journals with them); how many were deleted."""
        ...


class TaskSignals(Protocol):
    """Wake-ups and cancels between workers, watchers and use cases, across
    replicas when the implementation is shared (Redis). Only hints: the database
    stays the truth, and every waiter also polls it. Methods never raise for a
    backend outage (a lost signal only costs a poll interval)."""

    async def work_queued(self) -> None:
        """Tell idle workers (of every replica) that a task can be claimed."""
        ...

    async def wait_for_work(self, max_wait: float) -> None:
        """Return at a wake-up or after ``max_wait`` seconds."""
        ...

    async def cancel(self, task_id: str) -> None:
        """Tell whichever worker runs ``task_id`` to stop it."""
        ...

    async def wait_cancel(self, task_id: str, max_wait: float) -> bool:
        """Whether a cancel for ``task_id`` arrived within ``max_wait`` seconds
        (False: none yet; callers loop)."""
        ...

    async def journal_appended(self, task_id: str, sequence: int) -> None:
        """Announce that ``task_id``'s journal reached ``sequence``."""
        ...

    async def wait_journal(self, task_id: str, after_sequence: int, max_wait: float) -> None:
        """Return once an entry after ``after_sequence`` was announced, or after
        ``max_wait`` seconds (callers read the journal either way)."""
        ...

    async def close(self) -> None: ...


class Metrics(Protocol):
    """Where Cortex records what an operator graphs (``docs/operations.md`` names
    every series). Implemented by :class:`~cortex_core.adapters.metrics.PrometheusMetrics`
    (``CORTEX_METRICS_ADDRESS``) and :class:`~cortex_core.adapters.metrics.NullMetrics`
    (metrics off). Every method is cheap, synchronous, never blocks and never raises."""

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        """One call ended with gRPC status ``code`` (e.g. ``OK``) after ``seconds``."""
        ...

    def stream_opened(self, method: str) -> None: ...

    def stream_closed(self, method: str) -> None: ...

    def event_delivered(self, lag_seconds: float) -> None:
        """A live event reached a subscriber ``lag_seconds`` after it was published."""
        ...

    def subscriber_cut(self) -> None:
        """A subscriber that fell too far behind was ended (SubscriberTooSlow)."""
        ...

    def outbox_backlog(self, events: int) -> None:
        """Events now waiting in this replica's outbox for the event log."""
        ...

    def model_attempt(self, provider: str, outcome: str, first_token_seconds: float | None) -> None:
        """One attempt of the fallback chain ended: ``ok`` or a failure reason;
        ``first_token_seconds`` when it produced a first token."""
        ...

    def model_tokens(self, provider: str, kind: str, count: int) -> None:
        """Tokens used by a reply (``kind``: ``input`` or ``output``)."""
        ...

    def breaker_state(self, provider: str, state: str) -> None:
        """A provider's circuit is ``closed``, ``half_open`` or ``open``."""
        ...

    def tool_call(self, server: str, outcome: str, seconds: float) -> None:
        """A tool call on ``server`` ended: ``ok`` or its error reason."""
        ...

    def task_queue_depth(self, tasks: int) -> None:
        """Tasks QUEUED and not claimed (issue 12's runtime sets it)."""
        ...

    def task_claimed(self, expert: str, wait_seconds: float) -> None:
        """A worker claimed a task that became claimable ``wait_seconds`` ago."""
        ...

    def task_attempt(self, expert: str, outcome: str) -> None:
        """A task attempt ended: ``succeeded``, ``retry``, ``failed``, ``cancelled``,
        ``input_required`` or ``lease_lost``."""
        ...
