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
import time
from collections.abc import Sequence
from datetime import timedelta

from cachetools import LRUCache

from cortex_core import errors
from cortex_core.domain.identity import Caller, User
from cortex_core.domain.tokens import AccessClaims
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
        self._reads: dict[str, asyncio.Future[_SessionState]] = {}

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
        pending = self._reads.get(session_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_SessionState] = asyncio.get_running_loop().create_future()
        self._reads[session_id] = future
        try:
            state = await self._load(session_id)
            future.set_result(state)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers re-raise it themselves
            raise
        finally:
            del self._reads[session_id]
        self._sessions[session_id] = state
        return state

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
