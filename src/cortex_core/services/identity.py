"""Accounts, sign-in, token refresh and sessions (AuthService, SessionService).

Security properties (see docs/security.md):

* an unknown email and a wrong password fail with the same error after the same
  work (a dummy argon2 verification for unknown accounts);
* sign-in attempts take a reservation per account and per client address
  *before* the password is checked (so parallel guesses cannot outrun the
  throttle) and are settled after it; sign-ups are counted per client address;
  each kind of key has its own limits;
* refresh tokens are opaque, stored only as SHA-256, single-use, and bounded by
  the session's absolute lifetime; presenting a used one revokes the session.
  Of two concurrent refreshes with one token exactly one wins; the other is a
  reuse and revokes the session (clients must serialise their refreshes);
* passwords are rehashed on sign-in when the hashing parameters changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from cortex_core import errors
from cortex_core.domain.access_tokens import IssuedToken
from cortex_core.domain.events import (
    Change,
    MemberAdded,
    PasswordChanged,
    RevokeReason,
    SessionCreated,
    SessionRevoked,
    WorkspaceCreated,
)
from cortex_core.domain.identity import (
    MAX_DISPLAY_NAME,
    Caller,
    ClientInfo,
    Membership,
    MemberView,
    RefreshToken,
    Role,
    Session,
    User,
    Workspace,
    email_violation,
    new_id,
    normalize_email,
    reject,
    text_violation,
)
from cortex_core.domain.paging import Page, PageRequest
from cortex_core.ports import (
    AccessTokenCodec,
    AttemptOutcome,
    Clock,
    LoginThrottle,
    PasswordHasher,
    PasswordPolicy,
    UnitOfWork,
    UnitOfWorkFactory,
)
from cortex_core.services.dispatcher import EventBus

log = logging.getLogger(__name__)

REFRESH_PREFIX = "crt_"
DEFAULT_SESSION_LIFETIME = timedelta(days=30)


def _invalid_credentials() -> errors.Unauthenticated:
    return errors.Unauthenticated("invalid email or password", reason="INVALID_CREDENTIALS")


def _refresh_invalid(reason: str = "REFRESH_TOKEN_INVALID") -> errors.Unauthenticated:
    return errors.Unauthenticated("the refresh token is not valid", reason=reason)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass(slots=True)
class _Attempt:
    """How the throttled password check in progress ended."""

    outcome: AttemptOutcome = AttemptOutcome.ABANDONED

    def failed(self) -> errors.Unauthenticated:
        """Mark the attempt failed; return the error to raise."""
        self.outcome = AttemptOutcome.FAILED
        return _invalid_credentials()


@dataclasses.dataclass(frozen=True, slots=True)
class SignIn:
    """The outcome of Register, Login and RefreshToken: a session and its tokens."""

    user: User
    session: Session
    access: IssuedToken
    refresh_token: str


class Identity:
    """The identity use cases. Every method is one transaction."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        tokens: AccessTokenCodec,
        throttle: LoginThrottle,
        events: EventBus,
        session_lifetime: timedelta = DEFAULT_SESSION_LIFETIME,
    ) -> None:
        self._events = events
        self._uow = uow
        self._clock = clock
        self._hasher = hasher
        self._policy = policy
        self._tokens = tokens
        self._throttle = throttle
        self._session_lifetime = session_lifetime

    # --- AuthService -----------------------------------------------------------

    async def register(
        self, email: str, password: str, display_name: str, client: ClientInfo
    ) -> SignIn:
        """Create the user, a personal workspace they own, and a first session."""
        reject(
            [
                email_violation(email),
                text_violation(display_name, "display_name", required=True, limit=MAX_DISPLAY_NAME),
            ]
        )
        self._policy.check(password, field="password", email=email)
        if client.address:
            # Counted when reserved: every sign-up from the address counts.
            register_keys = [f"register:{client.address}"]
            token = await self._throttle.reserve(register_keys)
            await self._throttle.settle(register_keys, token, AttemptOutcome.SUCCEEDED)
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        user = User(
            id=new_id(),
            email=email.strip(),
            display_name=display_name.strip(),
            password_hash=password_hash,
            create_time=now,
            update_time=now,
        )
        workspace = Workspace(
            id=new_id(),
            display_name=f"{user.display_name}'s workspace",
            description="Personal workspace",
            create_time=now,
            update_time=now,
        )
        async with self._uow() as uow:
            if await uow.users.get_by_email(user.email) is not None:
                raise errors.AlreadyExists(
                    "an account with this email already exists", reason="EMAIL_TAKEN"
                )
            try:
                await uow.users.add(user)
            except errors.AlreadyExists:
                raise errors.AlreadyExists(
                    "an account with this email already exists", reason="EMAIL_TAKEN"
                ) from None
            await uow.workspaces.add(workspace)
            await uow.workspaces.add_member(Membership(workspace.id, user.id, Role.OWNER, now))
            sign_in = await self._open_session(uow, user, client, now)
            owner = MemberView(
                workspace.id, user.id, user.email, user.display_name, Role.OWNER, now
            )
            await self._events.commit(
                uow,
                [
                    WorkspaceCreated(actor_id=user.id, time=now, workspace=workspace),
                    MemberAdded(actor_id=user.id, time=now, member=owner),
                    self._session_created(sign_in),
                ],
            )
        log.info("user registered", extra={"user": user.name})
        return sign_in

    async def login(self, email: str, password: str, client: ClientInfo) -> SignIn:
        """Verify the credentials and open a session. The attempt is reserved before
        the password is checked and settled after it (see ``LoginThrottle``)."""
        reject(
            [
                email_violation(email) if not email.strip() else None,
                None if password else errors.FieldViolation("password", "is required", "REQUIRED"),
            ]
        )
        keys = self._throttle_keys(email, client)
        async with self._attempt(keys) as attempt:
            async with self._uow() as uow:
                user = await uow.users.get_by_email(normalize_email(email))
            if user is None:
                await self._hasher.verify_dummy(password)
                raise attempt.failed()
            if not await self._hasher.verify(user.password_hash, password):
                raise attempt.failed()
            attempt.outcome = AttemptOutcome.SUCCEEDED
        rehash = None
        if self._hasher.needs_rehash(user.password_hash):
            rehash = await self._hasher.hash(password)
        now = self._clock.now()
        async with self._uow() as uow:
            if rehash is not None:
                await uow.users.set_password_hash(user.id, rehash, now)
            sign_in = await self._open_session(uow, user, client, now)
            await self._events.commit(uow, [self._session_created(sign_in)])
        return sign_in

    async def refresh(self, refresh_token: str, client: ClientInfo) -> SignIn:
        """Rotate a refresh token; a reused token revokes its whole session."""
        if not refresh_token:
            reject([errors.FieldViolation("refresh_token", "is required", "REQUIRED")])
        if not refresh_token.startswith(REFRESH_PREFIX):
            raise _refresh_invalid()
        now = self._clock.now()
        async with self._uow() as uow:
            stored = await uow.sessions.get_refresh_token(hash_refresh_token(refresh_token))
            if stored is None:
                raise _refresh_invalid()
            session = await uow.sessions.get(stored.session_id)
            if session is None or session.revoke_time is not None:
                raise _refresh_invalid("SESSION_REVOKED")
            if stored.used_time is not None or not await uow.sessions.consume_refresh_token(
                stored.id, now
            ):
                await uow.sessions.revoke(session.id, now)
                await self._events.commit(
                    uow,
                    self._revocations(
                        session.user_id, [session.id], RevokeReason.REFRESH_TOKEN_REUSED
                    ),
                )
                log.warning(
                    "refresh token reused; session revoked", extra={"session": session.name}
                )
                raise _refresh_invalid("REFRESH_TOKEN_REUSED")
            if now >= stored.expire_time or now >= session.expire_time:
                raise _refresh_invalid("REFRESH_TOKEN_EXPIRED")
            user = await uow.users.get(session.user_id)
            if user is None:
                raise _refresh_invalid()
            await uow.sessions.touch(session.id, now)
            sign_in = await self._issue(uow, user, session, now)
            await uow.commit()
        return sign_in

    async def logout(self, caller: Caller) -> None:
        await self.revoke_session(caller, "-", caller.session_id, reason=RevokeReason.LOGOUT)

    async def change_password(self, caller: Caller, current: str, new: str) -> tuple[User, int]:
        """Check ``current``, store ``new``, and revoke the user's other sessions."""
        if not current:
            reject([errors.FieldViolation("current_password", "is required", "REQUIRED")])
        self._policy.check(new, field="new_password", email=caller.user.email)
        if current == new:
            raise errors.InvalidArgument(
                "the new password must differ from the current one",
                [errors.FieldViolation("new_password", "equals the current password")],
                reason="PASSWORD_UNCHANGED",
            )
        keys = [f"account:{normalize_email(caller.user.email)}"]
        async with self._attempt(keys) as attempt:
            async with self._uow() as uow:
                user = await uow.users.get(caller.user_id)
            if user is None or not await self._hasher.verify(user.password_hash, current):
                raise attempt.failed()
            attempt.outcome = AttemptOutcome.SUCCEEDED
        new_hash = await self._hasher.hash(new)
        now = self._clock.now()
        async with self._uow() as uow:
            await uow.users.set_password_hash(user.id, new_hash, now)
            revoked = await uow.sessions.revoke_all_for_user(user.id, now, keep=caller.session_id)
            await self._events.commit(
                uow,
                [
                    *self._revocations(user.id, revoked, RevokeReason.PASSWORD_CHANGED),
                    PasswordChanged(
                        actor_id=user.id,
                        time=now,
                        user_id=user.id,
                        session_id=caller.session_id,
                        revoked_session_count=len(revoked),
                    ),
                ],
            )
        return dataclasses.replace(user, password_hash=new_hash, update_time=now), len(revoked)

    # --- SessionService ------------------------------------------------------------

    async def list_sessions(self, caller: Caller, user_id: str, page: PageRequest) -> Page[Session]:
        if user_id not in ("-", caller.user_id):
            raise errors.PermissionDenied(
                "sessions can only be listed for yourself", reason="NOT_YOUR_SESSIONS"
            )
        async with self._uow() as uow:
            return await uow.sessions.list_for_user(caller.user_id, page)

    async def revoke_session(
        self,
        caller: Caller,
        user_id: str,
        session_id: str,
        *,
        reason: RevokeReason = RevokeReason.REVOKED,
    ) -> Session:
        """Revoke one of the caller's sessions (idempotent); ``user_id`` is the
        caller's id or ``-``. Another user's session is SESSION_NOT_FOUND, exactly
        like a missing one."""
        not_found = errors.NotFound("session not found", reason="SESSION_NOT_FOUND")
        if user_id not in ("-", caller.user_id):
            raise not_found
        now = self._clock.now()
        async with self._uow() as uow:
            session = await uow.sessions.get(session_id)
            if session is None or session.user_id != caller.user_id:
                raise not_found
            newly = await uow.sessions.revoke(session.id, now)
            if newly:
                session = dataclasses.replace(session, revoke_time=now)
            await self._events.commit(
                uow, self._revocations(caller.user_id, [session.id], reason) if newly else []
            )
        return session

    # --- helpers ---------------------------------------------------------------------

    def _revocations(
        self, user_id: str, session_ids: Sequence[str], reason: RevokeReason
    ) -> list[Change]:
        """Each revocation's event; its reaction (services/reactions.py) drops the
        sessions from this replica's caches before the event goes out."""
        now = self._clock.now()
        return [
            SessionRevoked(
                actor_id=user_id, time=now, user_id=user_id, session_id=session_id, reason=reason
            )
            for session_id in session_ids
        ]

    def _session_created(self, sign_in: SignIn) -> SessionCreated:
        return SessionCreated(
            actor_id=sign_in.user.id,
            time=sign_in.session.create_time,
            user_id=sign_in.user.id,
            session=sign_in.session,
        )

    @contextlib.asynccontextmanager
    async def _attempt(self, keys: Sequence[str]) -> AsyncIterator[_Attempt]:
        """A password check bracketed by the throttle: reserved before, settled after
        (an exception other than ``attempt.failed()`` abandons it, counting nothing)."""
        token = await self._throttle.reserve(keys)
        attempt = _Attempt()
        try:
            yield attempt
        finally:
            await self._throttle.settle(keys, token, attempt.outcome)

    def _throttle_keys(self, email: str, client: ClientInfo) -> Sequence[str]:
        keys = [f"account:{normalize_email(email)}"]
        if client.address:
            keys.append(f"address:{client.address}")
        return keys

    async def _open_session(
        self, uow: UnitOfWork, user: User, client: ClientInfo, now: datetime
    ) -> SignIn:
        session = Session(
            id=new_id(),
            user_id=user.id,
            create_time=now,
            last_use_time=now,
            expire_time=now + self._session_lifetime,
            client_address=client.address[:256],
            user_agent=client.user_agent[:512],
        )
        await uow.sessions.add(session)
        return await self._issue(uow, user, session, now)

    async def _issue(self, uow: UnitOfWork, user: User, session: Session, now: datetime) -> SignIn:
        raw = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await uow.sessions.add_refresh_token(
            RefreshToken(
                id=new_id(),
                session_id=session.id,
                token_hash=hash_refresh_token(raw),
                create_time=now,
                expire_time=session.expire_time,
            )
        )
        access = self._tokens.issue(user_id=user.id, session_id=session.id, now=now)
        return SignIn(user=user, session=session, access=access, refresh_token=raw)
