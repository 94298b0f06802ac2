"""Who may follow which events, and for how long: the policy of long-lived streams.

:class:`Subscriptions` opens ``SubscribeEvents`` streams. At open, the workspaces
asked for must be the caller's (NOT_FOUND otherwise); by default the stream covers
all of them plus the caller's own security events. While it is open:

* the caller's session is revoked or logged out (a ``session_revoked`` event on
  the caller's own stream, from any replica) or its token expires: the stream
  ends with UNAUTHENTICATED (SESSION_REVOKED, TOKEN_EXPIRED); the session is also
  re-checked at every heartbeat;
* the caller is removed from a workspace or it is deleted: that workspace's
  events stop after that event; when none is left the stream ends with
  PERMISSION_DENIED (NO_WORKSPACE_LEFT).

A stream covers the workspaces it was opened with; to follow a workspace joined
later, reconnect with the resume token. Filters (conversation, event kinds) are
applied by the hub before a subscriber's queue (see services/event_hub.py); the
events the policy needs pass them and are acted on without being yielded.

:class:`SessionGuard` is the part of that policy any stream can use: it ends a
stream with UNAUTHENTICATED on logout, revocation or token expiry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from cortex_core import errors
from cortex_core.domain.changes import user_stream, workspace_stream
from cortex_core.domain.events import (
    EventEnvelope,
    EventKind,
    EventRecord,
    Heartbeat,
    ResumeToken,
    SubscriptionItem,
)
from cortex_core.domain.identity import Caller
from cortex_core.domain.paging import PageRequest
from cortex_core.ports import Clock, UnitOfWorkFactory
from cortex_core.services.authentication import Authenticator, unauthenticated
from cortex_core.services.event_hub import EventHub, Subscription
from cortex_core.services.workspaces import workspace_not_found

logger = logging.getLogger(__name__)

T = TypeVar("T")
_WS_PREFIX = workspace_stream("")


@dataclasses.dataclass(frozen=True, slots=True)
class EventFilter:
    """What a subscriber asked for.

    ``workspace_ids``: the workspaces to follow (empty: all of the caller's);
    ``conversation_id``: only events about it ("" for any; its workspace must be
    the only one in ``workspace_ids``); ``kinds``: only these (None for any).
    """

    workspace_ids: tuple[str, ...] = ()
    conversation_id: str = ""
    kinds: frozenset[EventKind] | None = None

    def matches(self, envelope: EventEnvelope) -> bool:
        if self.kinds is not None and envelope.kind not in self.kinds:
            return False
        return not self.conversation_id or envelope.conversation_id == self.conversation_id


class SessionGuard:
    """Ends a stream with UNAUTHENTICATED when its caller's session ends.

    The session ends when it is logged out or revoked (on any replica: seen as a
    ``session_revoked`` event on the user's stream, or at a periodic re-check of
    the session) or when the access token the stream was opened with expires.
    Reasons: SESSION_REVOKED, TOKEN_EXPIRED.

    For any server stream, wrap what it yields::

        async for frame in guard.guard(caller, reply_frames()):
            yield frame

    :meth:`guard` stops ``source`` (``aclose``, so its ``finally`` runs) and
    raises the Unauthenticated error at once, even while ``source`` is waiting,
    and otherwise yields exactly what ``source`` yields. Event streams use the
    pieces directly (:meth:`revokes`, :meth:`expire_at`, :meth:`recheck`)
    because their subscription already carries the user's stream.
    """

    def __init__(
        self, *, hub: EventHub, authenticator: Authenticator, clock: Clock, recheck: float
    ) -> None:
        self._hub = hub
        self._authenticator = authenticator
        self._clock = clock
        self._recheck = recheck

    @staticmethod
    def revokes(caller: Caller, envelope: EventEnvelope) -> bool:
        """True for the event that ends ``caller``'s session."""
        return envelope.kind is EventKind.SESSION_REVOKED and envelope.session_id == (
            caller.session_id
        )

    def expire_at(
        self, caller: Caller, end: Callable[[errors.Unauthenticated], None]
    ) -> asyncio.TimerHandle:
        """Call ``end(TOKEN_EXPIRED)`` when the caller's token expires; cancel the handle
        when the stream ends first."""
        remaining = (caller.token_expire_time - self._clock.now()).total_seconds()
        return asyncio.get_running_loop().call_later(
            max(remaining, 0.0), end, unauthenticated("TOKEN_EXPIRED")
        )

    async def recheck(self, caller: Caller) -> None:
        """Raise Unauthenticated if the caller's token expired or its session ended."""
        await self._authenticator.ensure_active(caller)

    async def guard(self, caller: Caller, source: AsyncIterator[T]) -> AsyncIterator[T]:
        """``source``'s items until it ends, or until the session ends (see the class)."""
        watch = _Watch()
        expiry = self.expire_at(caller, watch.trip)
        watcher = asyncio.create_task(self._watch(caller, watch), name="cortex-session-guard")
        try:
            while True:
                if watch.error is not None:
                    raise watch.error
                watch.task = asyncio.current_task()  # whichever task iterates us now
                watch.waiting = True
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if watch.cancelled and watch.task is not None and not watch.task.uncancel():
                        raise watch.error or unauthenticated("SESSION_REVOKED") from None
                    raise
                finally:
                    watch.waiting = False
                yield item
        finally:
            expiry.cancel()
            watcher.cancel()
            await asyncio.wait((watcher,))
            if not watcher.cancelled() and watcher.exception() is not None:
                logger.error("the session guard failed", exc_info=watcher.exception())
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _watch(self, caller: Caller, watch: _Watch) -> None:
        """Trip ``watch`` on a revocation event or a failed re-check; survives log outages."""
        own = user_stream(caller.user_id)

        def revoking(envelope: EventEnvelope) -> bool:
            return self.revokes(caller, envelope)

        while watch.error is None:
            try:
                async with self._hub.subscribe(
                    {own: None}, queue_size=16, heartbeat=self._recheck, accept=revoking
                ) as subscription:
                    async for item in subscription:
                        if isinstance(item, EventRecord):
                            watch.trip(unauthenticated("SESSION_REVOKED"))
                            return
                        if isinstance(item, Heartbeat):
                            await self.recheck(caller)
            except errors.Unauthenticated as exc:
                watch.trip(exc)
                return
            except errors.CortexError as exc:
                if exc.reason != "SERVER_SHUTTING_DOWN":  # a drain ends every subscription
                    logger.warning("session guard lost the event log (%s); re-checking", exc.reason)
                await asyncio.sleep(self._recheck)
                try:
                    await self.recheck(caller)
                except errors.Unauthenticated as expired:
                    watch.trip(expired)
                    return
                except errors.CortexError:
                    pass  # the database is down too: try again later


class _Watch:
    """Shared by a guarded stream and its watcher: why it must end, and how to stop it."""

    __slots__ = ("cancelled", "error", "task", "waiting")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.error: errors.Unauthenticated | None = None
        self.waiting = False  # the stream is inside ``await anext(source)``
        self.cancelled = False

    def trip(self, error: errors.Unauthenticated) -> None:
        if self.error is not None:
            return
        self.error = error
        if self.waiting and self.task is not None:
            self.cancelled = True
            self.task.cancel()


class Subscriptions:
    """Opens event streams for callers (see the module docstring)."""

    def __init__(
        self,
        *,
        hub: EventHub,
        uow: UnitOfWorkFactory,
        guard: SessionGuard,
        heartbeat: float,
        queue_size: int,
    ) -> None:
        self._hub = hub
        self._uow = uow
        self._guard = guard
        self._heartbeat = heartbeat
        self._queue_size = queue_size

    async def open(
        self, caller: Caller, wanted: EventFilter, resume: ResumeToken | None = None
    ) -> EventStream:
        """An :class:`EventStream` to enter with ``async with``.

        Raises NotFound (WORKSPACE_NOT_FOUND) for a workspace the caller is not in.
        """
        positions = resume.positions if resume is not None else {}
        workspaces = await self._workspaces(caller, wanted.workspace_ids)
        streams: dict[str, int | None] = {
            workspace_stream(w): positions.get(workspace_stream(w)) for w in workspaces
        }
        own = user_stream(caller.user_id)
        streams[own] = positions.get(own)

        def accept(envelope: EventEnvelope) -> bool:
            return wanted.matches(envelope) or _concerns(caller, envelope)

        filtered = wanted.kinds is not None or bool(wanted.conversation_id)
        subscription = self._hub.subscribe(
            streams,
            queue_size=self._queue_size,
            heartbeat=self._heartbeat,
            accept=accept if filtered else None,
        )
        return EventStream(subscription, caller, wanted, self._guard)

    async def _workspaces(self, caller: Caller, requested: Sequence[str]) -> list[str]:
        """The workspace ids to follow; NOT_FOUND for one the caller is not in."""
        async with self._uow() as uow:
            if requested:
                for workspace_id in requested:
                    if await uow.workspaces.get_membership(workspace_id, caller.user_id) is None:
                        raise workspace_not_found()
                return list(dict.fromkeys(requested))
            found: list[str] = []
            token = ""
            while True:
                page = await uow.workspaces.list_for_user(
                    caller.user_id, PageRequest.parse(1000, token)
                )
                found.extend(w.id for w in page.items)
                token = page.next_page_token
                if not token:
                    return found


def _concerns(caller: Caller, envelope: EventEnvelope) -> bool:
    """Events that change what ``caller`` may see: the policy needs them unfiltered."""
    kind = envelope.kind
    return (
        kind is EventKind.WORKSPACE_DELETED
        or (kind is EventKind.MEMBER_REMOVED and envelope.user_id == caller.user_id)
        or SessionGuard.revokes(caller, envelope)
    )


class EventStream:
    """One caller's authorized event stream: an async context manager and an async
    iterator of :class:`EventRecord`, :class:`Heartbeat` and ``ReplayUnavailable``.

    Yields only what the caller may see and asked for. The iterator raises
    Unauthenticated, PermissionDenied (NO_WORKSPACE_LEFT), SubscriberTooSlow or
    Unavailable (both with ``metadata["resume_token"]``) as described in the module
    docstring; ``resume_token`` is the position after the last yielded item.
    """

    __slots__ = ("_caller", "_expiry", "_guard", "_subscription", "_wanted")

    def __init__(
        self, subscription: Subscription, caller: Caller, wanted: EventFilter, guard: SessionGuard
    ) -> None:
        self._subscription = subscription
        self._caller = caller
        self._wanted = wanted
        self._guard = guard
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def resume_token(self) -> str:
        return self._subscription.resume_token

    async def __aenter__(self) -> EventStream:
        await self._subscription.__aenter__()
        self._expiry = self._guard.expire_at(self._caller, self._subscription.close)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        await self._subscription.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> SubscriptionItem:
        subscription = self._subscription
        while True:
            item = await subscription.__anext__()
            if isinstance(item, EventRecord):
                envelope = item.envelope
                if _concerns(self._caller, envelope):
                    self._apply(item.stream, envelope)
                if self._wanted.matches(envelope):
                    return item
            elif isinstance(item, Heartbeat):
                await self._guard.recheck(self._caller)
                return item
            else:
                return item

    def _apply(self, stream: str, envelope: EventEnvelope) -> None:
        """Act on an event that changes what the caller may see."""
        if SessionGuard.revokes(self._caller, envelope):
            raise unauthenticated("SESSION_REVOKED")
        self._subscription.remove_stream(stream)
        if not any(s.startswith(_WS_PREFIX) for s in self._subscription.streams):
            raise errors.PermissionDenied(
                "no workspace of this subscription is accessible any more",
                reason="NO_WORKSPACE_LEFT",
            )
