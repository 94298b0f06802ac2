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

Token expiry and the session re-check are the one mechanism every long call
uses (:class:`~cortex_core.services.session_guard.SessionWatcher`, which also ends
SendMessage replies); what is particular to event streams is that they see a
revocation on any replica as a ``session_revoked`` event on the caller's own stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from types import TracebackType

from cortex_core import errors
from cortex_core.domain.event_records import (
    EventEnvelope,
    EventKind,
    EventRecord,
    Heartbeat,
    ResumeToken,
    SubscriptionItem,
)
from cortex_core.domain.events import user_stream, workspace_stream
from cortex_core.domain.identity import Caller
from cortex_core.domain.paging import PageRequest
from cortex_core.ports import UnitOfWorkFactory
from cortex_core.services.access import workspace_not_found
from cortex_core.services.authentication import unauthenticated
from cortex_core.services.event_hub import EventHub, Subscription
from cortex_core.services.session_guard import SessionWatcher

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


def revokes(caller: Caller, envelope: EventEnvelope) -> bool:
    """True for the event that ends ``caller``'s session (from any replica)."""
    return envelope.kind is EventKind.SESSION_REVOKED and envelope.session_id == (caller.session_id)


class Subscriptions:
    """Opens event streams for callers (see the module docstring)."""

    def __init__(
        self,
        *,
        hub: EventHub,
        uow: UnitOfWorkFactory,
        sessions: SessionWatcher,
        heartbeat: float,
        queue_size: int,
    ) -> None:
        self._hub = hub
        self._uow = uow
        self._sessions = sessions
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
            # What the policy needs unfiltered (_concerns) is about no conversation.
            conversation=wanted.conversation_id,
        )
        return EventStream(subscription, caller, wanted, self._sessions)

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
        or revokes(caller, envelope)
    )


class EventStream:
    """One caller's authorized event stream: an async context manager and an async
    iterator of :class:`EventRecord`, :class:`Heartbeat` and ``ReplayUnavailable``.

    Yields only what the caller may see and asked for. The iterator raises
    Unauthenticated, PermissionDenied (NO_WORKSPACE_LEFT), SubscriberTooSlow or
    Unavailable (both with ``metadata["resume_token"]``) as described in the module
    docstring; ``resume_token`` is the position after the last yielded item.
    """

    __slots__ = ("_caller", "_expiry", "_sessions", "_subscription", "_wanted")

    def __init__(
        self,
        subscription: Subscription,
        caller: Caller,
        wanted: EventFilter,
        sessions: SessionWatcher,
    ) -> None:
        self._subscription = subscription
        self._caller = caller
        self._wanted = wanted
        self._sessions = sessions
        self._expiry: asyncio.TimerHandle | None = None

    @property
    def resume_token(self) -> str:
        return self._subscription.resume_token

    async def __aenter__(self) -> EventStream:
        await self._subscription.__aenter__()
        self._expiry = self._sessions.expire_at(self._caller, self._subscription.close)
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
                await self._sessions.recheck(self._caller)
                return item
            else:
                return item

    def _apply(self, stream: str, envelope: EventEnvelope) -> None:
        """Act on an event that changes what the caller may see."""
        if revokes(self._caller, envelope):
            raise unauthenticated("SESSION_REVOKED")
        self._subscription.remove_stream(stream)
        if not any(s.startswith(_WS_PREFIX) for s in self._subscription.streams):
            raise errors.PermissionDenied(
                "no workspace of this subscription is accessible any more",
                reason="NO_WORKSPACE_LEFT",
            )
