"""``cortex.events.v1.EventService.SubscribeEvents``: the live, resumable event stream.

This module only converts: the request into an :class:`EventFilter` and a
:class:`ResumeToken`, and what the caller's :class:`EventStream` yields into
frames. Who may see what, and for how long, is ``services/subscriptions.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from cachetools import FIFOCache
from cortex.events.v1 import event_pb2
from cortex.events.v1 import event_service_pb2 as pb
from cortex.events.v1 import event_service_pb2_grpc as pb_grpc

from cortex_core import errors
from cortex_core.api import convert
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.api.event_encoding import KINDS
from cortex_core.domain.event_records import EventRecord, Heartbeat, ResumeToken
from cortex_core.domain.events import workspace_stream
from cortex_core.ports import Clock
from cortex_core.services.subscriptions import EventFilter, Subscriptions

_WS_PREFIX = workspace_stream("")
# Decoded records kept per process: subscribers of one stream share a record's decoded
# event and, when their resume tokens agree, its frame. Older entries are decoded again.
_DECODED_RECORDS = 1024


def _workspace_name(stream: str) -> str:
    return f"workspaces/{stream[len(_WS_PREFIX) :]}" if stream.startswith(_WS_PREFIX) else ""


class _Decoded:
    """A record's payload decoded once for every subscriber in this process.

    ``event`` carries the record's sequence and is never changed after that; ``frame``
    is the last frame built from it, for subscribers whose token is ``token``. Frames
    are only serialized by grpc, never changed, so subscribers may yield the same one.
    """

    __slots__ = ("event", "frame", "payload", "token")

    def __init__(self, record: EventRecord) -> None:
        self.payload = record.payload
        self.event = event_pb2.Event.FromString(record.payload)
        self.event.sequence = record.sequence
        self.token = ""
        self.frame: pb.SubscribeEventsResponse | None = None

    def frame_for(self, token: str) -> pb.SubscribeEventsResponse:
        frame = self.frame
        if frame is None or token != self.token:
            frame = pb.SubscribeEventsResponse(event=self.event)
            frame.event.resume_token = token
            self.frame, self.token = frame, token
        return frame


def event_filter(request: pb.SubscribeEventsRequest) -> EventFilter:
    """The request's filters; INVALID_ARGUMENT (with a field violation) for bad names."""
    workspaces = [
        convert.parse_name(name, "workspaces/{}", "workspaces")[0] for name in request.workspaces
    ]
    conversation_id = ""
    if request.conversation:
        workspace_id, conversation_id = convert.parse_name(
            request.conversation, "workspaces/{}/conversations/{}", "conversation"
        )
        if workspaces and workspace_id not in workspaces:
            raise errors.InvalidArgument(
                "the conversation is not in the requested workspaces",
                [errors.FieldViolation("conversation", "must be in `workspaces`")],
            )
        workspaces = [workspace_id]
    kinds = None
    if request.event_types:
        # An EventType this server does not know matches nothing (as if no event had it).
        kinds = frozenset(KINDS[t] for t in request.event_types if t in KINDS)
    return EventFilter(tuple(workspaces), conversation_id, kinds)


class EventService(pb_grpc.EventServiceServicer):
    def __init__(self, *, subscriptions: Subscriptions, clock: Clock) -> None:
        self._subscriptions = subscriptions
        self._clock = clock
        self._decoded: FIFOCache[tuple[str, int], _Decoded] = FIFOCache(_DECODED_RECORDS)

    async def SubscribeEvents(
        self, request: pb.SubscribeEventsRequest, context: ServicerContext
    ) -> AsyncIterator[pb.SubscribeEventsResponse]:
        resume = ResumeToken.decode(request.resume_token) if request.resume_token else None
        wanted = event_filter(request)
        stream = await self._subscriptions.open(current_caller(), wanted, resume)
        async with stream:
            async for item in stream:
                if isinstance(item, EventRecord):
                    yield self._decode(item).frame_for(stream.resume_token)
                elif isinstance(item, Heartbeat):
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

    def _decode(self, record: EventRecord) -> _Decoded:
        key = (record.stream, record.sequence)
        decoded = self._decoded.get(key)
        if decoded is None or decoded.payload != record.payload:  # a reset log reuses keys
            decoded = self._decoded[key] = _Decoded(record)
        return decoded
