"""``cortex.events.v1.EventService.SubscribeEvents``: the live, resumable event stream.

Authorization happens when the stream opens (the workspaces asked for must be
the caller's; by default all of them plus the caller's own security events)
and again whenever it could have changed:

* the caller's session is revoked (seen as a ``session_revoked`` event on the
  caller's own stream, from any replica) or its token expires: the stream ends
  with UNAUTHENTICATED; the session is also re-checked at every heartbeat;
* the caller is removed from a workspace or it is deleted: its events stop
  after that event; when no workspace is left the stream ends with
  PERMISSION_DENIED.

A subscription covers the workspaces it was opened with; to follow a
workspace joined later, reconnect with the resume token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import Any

from cortex.events.v1 import event_pb2
from cortex.events.v1 import event_service_pb2 as pb
from cortex.events.v1 import event_service_pb2_grpc as pb_grpc

from cortex_core import errors
from cortex_core.api import convert
from cortex_core.api.context import current_caller
from cortex_core.domain.changes import user_stream, workspace_stream
from cortex_core.domain.events import EventRecord, Heartbeat, ResumeToken
from cortex_core.domain.identity import Caller
from cortex_core.domain.paging import PageRequest
from cortex_core.ports import Clock, UnitOfWorkFactory
from cortex_core.services.authentication import Authenticator, unauthenticated
from cortex_core.services.event_hub import EventHub
from cortex_core.services.workspaces import workspace_not_found

_WS_PREFIX = "ws:"
# Decoded records kept per process: subscribers of one stream share a record's decoded
# event and, when their resume tokens agree, its frame. Older entries are decoded again.
_DECODED_RECORDS = 1024


def _workspace_name(stream: str) -> str:
    return f"workspaces/{stream[len(_WS_PREFIX) :]}" if stream.startswith(_WS_PREFIX) else ""


def _conversation_of(event: event_pb2.Event) -> str:
    """The conversation an event is about, or "" when it is about none."""
    kind = event.WhichOneof("payload")
    if kind in ("conversation_created", "conversation_updated"):
        return str(getattr(event, kind).conversation.name)
    if kind == "conversation_deleted":
        return str(event.conversation_deleted.conversation)
    if kind == "message_created":
        return str(event.message_created.message.name).rsplit("/messages/", 1)[0]
    if kind == "reply_started":
        return str(event.reply_started.conversation)
    if kind == "reply_delta":
        return str(event.reply_delta.message).rsplit("/messages/", 1)[0]
    if kind == "reply_completed":
        return str(event.reply_completed.message.name).rsplit("/messages/", 1)[0]
    return ""


class _Decoded:
    """A record's payload decoded once for every subscriber in this process.

    ``event`` carries the record's sequence and is never changed after that; ``frame``
    is the last frame built from it, for subscribers whose token is ``token``. Frames
    are only serialized by grpc, never changed, so subscribers may yield the same one.
    """

    __slots__ = ("_conversation", "event", "frame", "kind", "payload", "token")

    def __init__(self, record: EventRecord) -> None:
        self.payload = record.payload
        self.event = event_pb2.Event.FromString(record.payload)
        self.event.sequence = record.sequence
        self.kind = self.event.WhichOneof("payload")
        self._conversation: str | None = None
        self.token = ""
        self.frame: pb.SubscribeEventsResponse | None = None

    @property
    def conversation(self) -> str:
        if self._conversation is None:
            self._conversation = _conversation_of(self.event)
        return self._conversation

    def frame_for(self, token: str) -> pb.SubscribeEventsResponse:
        frame = self.frame
        if frame is None or token != self.token:
            frame = pb.SubscribeEventsResponse(event=self.event)
            frame.event.resume_token = token
            self.frame, self.token = frame, token
        return frame


def _expire(subscription: Any) -> None:
    subscription.close(unauthenticated("TOKEN_EXPIRED"))


class EventService(pb_grpc.EventServiceServicer):
    def __init__(
        self,
        *,
        hub: EventHub,
        uow: UnitOfWorkFactory,
        authenticator: Authenticator,
        clock: Clock,
        heartbeat: float,
        queue_size: int,
    ) -> None:
        self._hub = hub
        self._uow = uow
        self._authenticator = authenticator
        self._clock = clock
        self._heartbeat = heartbeat
        self._queue_size = queue_size
        self._decoded: dict[tuple[str, int], _Decoded] = {}

    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: Any
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        caller = current_caller()
        positions = (
            ResumeToken.decode(request.resume_token).positions if request.resume_token else {}
        )
        conversation = ""
        requested = [
            convert.parse_name(name, "workspaces/{}", "workspaces")[0]
            for name in request.workspaces
        ]
        if request.conversation:
            workspace_id, _ = convert.parse_name(
                request.conversation, "workspaces/{}/conversations/{}", "conversation"
            )
            conversation = request.conversation
            if requested and workspace_id not in requested:
                raise errors.InvalidArgument(
                    "the conversation is not in the requested workspaces",
                    [errors.FieldViolation("conversation", "must be in `workspaces`")],
                )
            requested = [workspace_id]
        workspaces = await self._workspaces(caller, requested)
        streams: dict[str, int | None] = {
            workspace_stream(w): positions.get(workspace_stream(w)) for w in workspaces
        }
        own = user_stream(caller.user_id)
        streams[own] = positions.get(own)
        types = frozenset(request.event_types)

        async with self._hub.subscribe(
            streams, queue_size=self._queue_size, heartbeat=self._heartbeat
        ) as subscription:
            remaining = (caller.token_expire_time - self._clock.now()).total_seconds()
            expiry = asyncio.get_running_loop().call_later(
                max(remaining, 0.0), _expire, subscription
            )
            try:
                async for item in subscription:
                    if isinstance(item, EventRecord):
                        frame = self._event(item, subscription, caller, types, conversation)
                        if frame is not None:
                            yield frame
                    elif isinstance(item, Heartbeat):
                        await self._authenticator.ensure_active(caller)
                        yield pb.SubscribeEventsResponse(
                            heartbeat=pb.Heartbeat(
                                server_time=convert.timestamp(self._clock.now()),
                                resume_token=item.resume_token,
                            )
                        )
                    else:
                        yield pb.SubscribeEventsResponse(
                            replay_unavailable=pb.ReplayUnavailable(
                                workspace=_workspace_name(item.stream),
                                requested_sequence=item.requested_after,
                                oldest_available_sequence=item.oldest_available,
                            )
                        )
            finally:
                expiry.cancel()

    def _event(
        self,
        record: EventRecord,
        subscription: Any,
        caller: Caller,
        types: Collection[int],
        conversation: str,
    ) -> pb.SubscribeEventsResponse | None:
        """The frame for a record (None when filtered out); applies access changes."""
        decoded = self._decode(record)
        event = decoded.event  # shared: read only
        kind = decoded.kind
        if kind == "session_revoked" and event.session_revoked.session.endswith(
            f"/sessions/{caller.session_id}"
        ):
            raise unauthenticated("SESSION_REVOKED")
        leaving = (
            kind == "member_removed" and event.member_removed.member.user == caller.user.name
        ) or kind == "workspace_deleted"
        if leaving:
            subscription.remove_stream(record.stream)
            if not any(s.startswith(_WS_PREFIX) for s in subscription.streams):
                raise errors.PermissionDenied(
                    "no workspace of this subscription is accessible any more",
                    reason="NO_WORKSPACE_LEFT",
                )
        if types and event.type not in types:
            return None
        if conversation and decoded.conversation != conversation:
            return None
        return decoded.frame_for(subscription.resume_token)

    def _decode(self, record: EventRecord) -> _Decoded:
        key = (record.stream, record.sequence)
        cache = self._decoded
        decoded = cache.get(key)
        if decoded is None or decoded.payload != record.payload:  # a reset log reuses keys
            decoded = cache[key] = _Decoded(record)
            if len(cache) > _DECODED_RECORDS:
                del cache[next(iter(cache))]
        return decoded

    async def _workspaces(self, caller: Caller, requested: list[str]) -> list[str]:
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
