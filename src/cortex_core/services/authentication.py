"""Turning a bearer token into a :class:`Caller`, cheaply and safely.

Verifying a JWT on every call costs as much as the call itself, so verified
claims are cached (a bounded ``cachetools.LRUCache``) until the token expires. Revocation must still
win quickly: the session behind a token is re-read from the database at most
``recheck`` seconds (default 1 s) after it was last read, so a revocation made
on any replica takes effect everywhere within that time, and at once on the
replica that made it (:meth:`Authenticator.sessions_revoked`). Concurrent calls
for one session share a single database read.

Every failure is ``Unauthenticated`` with one generic message; the ``reason``
(TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED, SESSION_REVOKED) tells a client
whether refreshing can help, without saying more.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Sequence
from datetime import timedelta

from cachetools import LRUCache

from cortex_core import errors
from cortex_core.domain.access_tokens import AccessClaims
from cortex_core.domain.identity import Caller, User
from cortex_core.ports import AccessTokenCodec, Clock, UnitOfWorkFactory

GENERIC_MESSAGE = "missing or invalid credentials"
TOUCH_INTERVAL = timedelta(seconds=60)


def unauthenticated(reason: str) -> errors.Unauthenticated:
    return errors.Unauthenticated(GENERIC_MESSAGE, reason=reason)


@dataclasses.dataclass(slots=True)
class _SessionState:
    user: User | None  # None: revoked, expired or gone
    checked: float  # time.monotonic() of the read


@dataclasses.dataclass(slots=True)
class _Verified:
    claims: AccessClaims
    caller: Caller | None = None  # built from ``state``; reused while it is current
    state: _SessionState | None = None


class Authenticator:
    def __init__(
        self,
        *,
        tokens: AccessTokenCodec,
        uow: UnitOfWorkFactory,
        clock: Clock,
        recheck: float = 1.0,
        max_tokens: int = 10_000,
        max_sessions: int = 10_000,
    ) -> None:
        self._tokens = tokens
        self._uow = uow
        self._clock = clock
        self._recheck = recheck
        self._verified: LRUCache[str, _Verified] = LRUCache(maxsize=max_tokens)
        self._sessions: LRUCache[str, _SessionState] = LRUCache(maxsize=max_sessions)
        self._reads: dict[str, asyncio.Future[_SessionState]] = {}  # reads in flight

    async def authenticate(self, token: str | None) -> Caller:
        """The caller for a bearer token; raise Unauthenticated otherwise."""
        if not token:
            raise unauthenticated("TOKEN_MISSING")
        now = self._clock.now()
        verified = self._verified.get(token)
        if verified is None:
            try:
                claims = self._tokens.verify(token, now=now)
            except errors.Unauthenticated as exc:
                raise unauthenticated(exc.reason) from None
            verified = self._verified[token] = _Verified(claims)
        elif now >= verified.claims.expire_time:
            del self._verified[token]
            raise unauthenticated("TOKEN_EXPIRED")
        claims = verified.claims
        state = self._sessions.get(claims.session_id)
        if state is None or time.monotonic() - state.checked >= self._recheck:
            state = await self._read(claims.session_id)
        if state.user is None:
            raise unauthenticated("SESSION_REVOKED")
        if verified.state is not state or verified.caller is None:
            verified.caller = Caller(
                user=state.user, session_id=claims.session_id, token_expire_time=claims.expire_time
            )
            verified.state = state
        return verified.caller

    async def ensure_active(self, caller: Caller) -> None:
        """Raise Unauthenticated when the caller's token expired or its session ended
        (for long-lived streams, which authenticate once when they open)."""
        if self._clock.now() >= caller.token_expire_time:
            raise unauthenticated("TOKEN_EXPIRED")
        state = self._sessions.get(caller.session_id)
        if state is None or time.monotonic() - state.checked >= self._recheck:
            state = await self._read(caller.session_id)
        if state.user is None:
            raise unauthenticated("SESSION_REVOKED")

    def sessions_revoked(self, session_ids: Sequence[str]) -> None:
        """Forget the sessions at once on this replica (RevocationListener)."""
        for session_id in session_ids:
            self._sessions[session_id] = _SessionState(None, time.monotonic())

    async def _read(self, session_id: str) -> _SessionState:
        """The session's state, read once for every call that asks meanwhile.

        The read runs in a task of its own that no caller owns: a caller that goes
        away (cancelled) stops waiting, while the read goes on for the others
        (before, the first caller did the read, and its cancellation reached every
        other caller waiting for it as a CancelledError)."""
        pending = self._reads.get(session_id)
        if pending is None:
            pending = asyncio.ensure_future(self._load(session_id))
            self._reads[session_id] = pending
            pending.add_done_callback(functools.partial(self._loaded, session_id))
        return await asyncio.shield(pending)

    def _loaded(self, session_id: str, read: asyncio.Future[_SessionState]) -> None:
        """Runs before any caller resumes: cache a successful read."""
        if self._reads.get(session_id) is read:
            del self._reads[session_id]
        if read.cancelled() or read.exception() is not None:
            return  # every caller re-raises the error itself
        self._sessions[session_id] = read.result()

    async def _load(self, session_id: str) -> _SessionState:
        now = self._clock.now()
        async with self._uow() as uow:
            session = await uow.sessions.get(session_id)
            if session is None or not session.is_active(now):
                return _SessionState(None, time.monotonic())
            user = await uow.users.get(session.user_id)
            if user is not None and now - session.last_use_time >= TOUCH_INTERVAL:
                await uow.sessions.touch(session_id, now)
                await uow.commit()
        return _SessionState(user, time.monotonic())
