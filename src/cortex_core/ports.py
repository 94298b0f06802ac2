"""The swappable parts of Cortex Core, as ``typing.Protocol``s.

Each port has an in-memory or embedded implementation in ``adapters`` that is
both the default of ``make run`` and the double used by tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from cortex_core.domain.events import EventRead, EventRecord
from cortex_core.domain.identity import (
    Membership,
    MemberView,
    RefreshToken,
    Role,
    Session,
    User,
    Workspace,
)
from cortex_core.domain.paging import Page, PageRequest
from cortex_core.domain.tokens import AccessClaims, IssuedToken


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


class LoginThrottle(Protocol):
    """Growing delays after failed logins, per account and per client address."""

    async def check(self, keys: Sequence[str]) -> None:
        """Raise ResourceExhausted(reason LOGIN_THROTTLED, retry_after) while any key waits."""
        ...

    async def record_failure(self, keys: Sequence[str]) -> None: ...

    async def record_success(self, keys: Sequence[str]) -> None: ...


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
        self, stream: str, event_id: str, payload: bytes, now: datetime
    ) -> EventRecord:
        """Store one event; its sequence is the stream's previous last sequence + 1."""
        ...

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        """Up to ``limit`` records with ``sequence > after_sequence``, ascending.

        ``limit`` 0 returns no records, only ``oldest_available``/``last_sequence``.
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
