"""Ending a long-running call when its caller's session ends.

A stream authenticates once, when it opens. :meth:`SessionGuard.watch` keeps
watching the caller for as long as the work runs and ends it with
``Unauthenticated`` when

* the session is revoked on this replica (logout, RevokeSession, a reused
  refresh token, a password change): at once, through :meth:`sessions_revoked`
  (a revocation reaction on the event bus);
* the access token expires (TOKEN_EXPIRED): at once, by a timer;
* the session was revoked on another replica: seen at the next re-check, every
  ``recheck`` seconds of streaming (``Authenticator.ensure_active``).

The work learns it in two ways, both cheap enough for every streamed piece:
:attr:`Watch.attention` is a plain attribute to test before :meth:`Watch.check`,
and :meth:`Watch.interruptible` wraps the one await that can last (the model's
next piece), so a stalled provider is interrupted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterator, Sequence
from typing import TypeVar

from cortex_core import errors
from cortex_core.domain.identity import Caller
from cortex_core.ports import Clock
from cortex_core.services.authentication import Authenticator, unauthenticated

T = TypeVar("T")
log = logging.getLogger(__name__)


class Watch:
    """One call's view of its caller's session."""

    __slots__ = (
        "_caller",
        "_expiry",
        "_guard",
        "_interrupted",
        "_parked",
        "_recheck",
        "attention",
        "ended",
    )

    def __init__(self, guard: SessionGuard, caller: Caller) -> None:
        self._guard = guard
        self._caller = caller
        self.ended: errors.Unauthenticated | None = None
        self.attention = False  # ended, or a re-check is due: call check()
        self._parked: asyncio.Task[object] | None = None
        self._interrupted = False
        loop = asyncio.get_running_loop()
        remaining = (caller.token_expire_time - guard.clock.now()).total_seconds()
        self._expiry = loop.call_later(
            max(remaining, 0.0), self.end, unauthenticated("TOKEN_EXPIRED")
        )
        self._recheck = loop.call_later(guard.recheck, self._due)

    async def check(self) -> None:
        """Raise Unauthenticated if the session ended; re-read it when a re-check is
        due. A re-check that cannot reach the database is logged and skipped: an
        outage does not end work that was authorized."""
        if self.ended is not None:
            raise self.ended
        self.attention = False
        self._recheck = asyncio.get_running_loop().call_later(self._guard.recheck, self._due)
        try:
            await self._guard.authenticator.ensure_active(self._caller)
        except errors.Unauthenticated as exc:
            self.end(exc)
            raise exc from None
        except errors.CortexError as exc:
            log.warning("session re-check failed (%s); continuing", exc.reason)

    async def interruptible(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable``; when the session ends meanwhile, stop waiting (the
        awaitable is cancelled) and raise Unauthenticated."""
        if self.ended is not None:
            raise self.ended
        task = asyncio.current_task()
        self._parked = task
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._interrupted and task is not None and self.ended is not None:
                self._interrupted = False
                if task.uncancel() == 0:  # ours, and no one else's: it is the session
                    raise self.ended from None
            raise
        finally:
            self._parked = None

    def end(self, error: errors.Unauthenticated) -> None:
        """The session is over: remember why and interrupt a parked await."""
        if self.ended is not None:
            return
        self.ended = error
        self.attention = True
        if self._parked is not None and not self._interrupted:
            self._interrupted = True
            self._parked.cancel()

    def _due(self) -> None:
        self.attention = True

    def close(self) -> None:
        self._expiry.cancel()
        self._recheck.cancel()


class SessionGuard:
    """Every watch on this replica, by session id (a RevocationListener)."""

    def __init__(self, *, authenticator: Authenticator, clock: Clock, recheck: float) -> None:
        self.authenticator = authenticator
        self.recheck = recheck
        self.clock = clock
        self._watches: dict[str, set[Watch]] = {}

    @contextlib.contextmanager
    def watch(self, caller: Caller) -> Iterator[Watch]:
        """Watch ``caller``'s session while the block runs."""
        watch = Watch(self, caller)
        watches = self._watches.setdefault(caller.session_id, set())
        watches.add(watch)
        try:
            yield watch
        finally:
            watch.close()
            watches.discard(watch)
            if not watches and self._watches.get(caller.session_id) is watches:
                del self._watches[caller.session_id]

    def sessions_revoked(self, session_ids: Sequence[str]) -> None:
        """End every watch of these sessions (RevocationListener)."""
        for session_id in session_ids:
            for watch in list(self._watches.get(session_id, ())):
                watch.end(unauthenticated("SESSION_REVOKED"))
