"""Ending a long-running call when its caller's session ends.

A stream authenticates once, when it opens. :meth:`SessionWatcher.watch` keeps
watching the caller for as long as the work runs and ends it with
``Unauthenticated`` when

* the session is revoked on this replica (logout, RevokeSession, a reused
  refresh token, a password change): at once, through :meth:`sessions_revoked`
  (a revocation reaction on the event bus);
* the access token expires (TOKEN_EXPIRED): at once, by a timer;
* the session was revoked on another replica: at the next re-check, every
  ``recheck`` seconds (``Authenticator.ensure_active``, run beside the work; a
  re-check that cannot reach the database is logged and the work goes on).

The work learns it in two ways, both cheap enough for every streamed piece:
:attr:`Watch.ended` is a plain attribute to test (:meth:`Watch.check` raises
it), and :meth:`Watch.interruptible` wraps the one await that can last (e.g. the
model's next piece), so work parked there is interrupted at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

from cortex_core import errors
from cortex_core.domain.identity import Caller
from cortex_core.ports import Clock
from cortex_core.services.authentication import Authenticator, unauthenticated

T = TypeVar("T")
log = logging.getLogger(__name__)


class Watch:
    """One call's view of its caller's session; built by :meth:`SessionWatcher.watch`."""

    __slots__ = (
        "_caller",
        "_closed",
        "_expiry",
        "_guard",
        "_interrupted",
        "_parked",
        "_probe",
        "_recheck",
        "ended",
    )

    def __init__(self, guard: SessionWatcher, caller: Caller) -> None:
        self._guard = guard
        self._caller = caller
        self.ended: errors.Unauthenticated | None = None
        self._parked: asyncio.Task[object] | None = None
        self._interrupted = False
        self._closed = False
        self._probe: asyncio.Future[None] | None = None
        self._expiry = guard.expire_at(caller, self.end)
        self._recheck: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            guard.recheck_interval, self._due
        )

    def check(self) -> None:
        """Raise Unauthenticated (SESSION_REVOKED, TOKEN_EXPIRED) if the session ended."""
        if self.ended is not None:
            raise self.ended

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
                if task.uncancel() == 0:  # ours alone: the session ended
                    raise self.ended from None
            raise
        finally:
            self._parked = None

    def end(self, error: errors.Unauthenticated) -> None:
        """The session is over: remember why and interrupt a parked await."""
        if self.ended is not None or self._closed:
            return
        self.ended = error
        if self._parked is not None and not self._interrupted:
            self._interrupted = True
            self._parked.cancel()

    def close(self) -> None:
        self._closed = True
        self._expiry.cancel()
        if self._recheck is not None:
            self._recheck.cancel()
        if self._probe is not None:
            self._probe.cancel()

    def _due(self) -> None:
        self._recheck = None
        probe = asyncio.ensure_future(self._guard.recheck(self._caller))
        probe.add_done_callback(self._probed)
        self._probe = probe

    def _probed(self, probe: asyncio.Future[None]) -> None:
        self._probe = None
        if probe.cancelled() or self._closed:
            return
        error = probe.exception()
        if isinstance(error, errors.Unauthenticated):
            self.end(error)
            return
        if error is not None:
            log.warning("session re-check failed (%r); the call goes on", error)
        self._recheck = asyncio.get_running_loop().call_later(
            self._guard.recheck_interval, self._due
        )


class SessionWatcher:
    """Every watch on this replica, by session id (a RevocationListener)."""

    def __init__(self, *, authenticator: Authenticator, clock: Clock, recheck: float) -> None:
        self._authenticator = authenticator
        self.recheck_interval = recheck
        self._clock = clock
        self._watches: dict[str, set[Watch]] = {}

    def expire_at(
        self, caller: Caller, end: Callable[[errors.Unauthenticated], None]
    ) -> asyncio.TimerHandle:
        """Call ``end(TOKEN_EXPIRED)`` when the caller's access token expires; cancel the
        handle when the work ends first."""
        remaining = (caller.token_expire_time - self._clock.now()).total_seconds()
        return asyncio.get_running_loop().call_later(
            max(remaining, 0.0), end, unauthenticated("TOKEN_EXPIRED")
        )

    async def recheck(self, caller: Caller) -> None:
        """Raise Unauthenticated if the caller's token expired or its session ended
        (on any replica: read from the database at most once a second)."""
        await self._authenticator.ensure_active(caller)

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
