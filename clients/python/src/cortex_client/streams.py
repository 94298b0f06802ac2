"""Resumable streams: SubscribeEvents by resume token, WatchTask by ``after_sequence``.

Both reconnect after a failure that reconnecting can cure (``backoff.retryable``: a
transport failure without an ErrorInfo reason, such as a stream reset by a proxy whose
replica died, or a server's UNAVAILABLE, stream cap, rate limit, slow subscriber or access
token that expired mid-stream), waiting as ``Backoff`` says (at least the server's RetryInfo),
and resume exactly after the last frame they yielded. Anything else raises the typed
``CortexError``; so does running out of ``Backoff.attempts`` consecutive failures.
Heartbeats are consumed (they advance the resume point) and never yielded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from cortex.events.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from cortex.experts.v1 import expert_service_pb2, expert_service_pb2_grpc
from cortex_client.backoff import Backoff, retryable
from cortex_client.errors import CortexError

log = logging.getLogger("cortex_client")
_RESUME_TRAILER = "cortex-resume-token"


class EventSubscription:
    """``async for event in EventSubscription(channel, workspaces=[...])`` yields each
    matching ``Event`` once, across reconnects.

    ``resume_token`` is always the point after the last event (or heartbeat) received:
    persist it to continue in a later process (pass it back as ``resume_token``).
    ``on_gap`` hears of each ``ReplayUnavailable`` (events the server no longer has: reload
    what you cached). ``reconnects`` counts the streams reopened.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        workspaces: list[str] | None = None,
        conversation: str = "",
        event_types: list[event_pb2.EventType] | None = None,
        resume_token: str = "",
        backoff: Backoff | None = None,
        on_gap: Callable[[event_service_pb2.ReplayUnavailable], None] | None = None,
    ) -> None:
        self._stub = event_service_pb2_grpc.EventServiceStub(channel)
        self._workspaces = list(workspaces or ())
        self._conversation = conversation
        self._event_types = list(event_types or ())
        self.resume_token = resume_token
        self._backoff = backoff or Backoff(attempts=None)
        self._on_gap = on_gap
        self._last: dict[str, int] = {}  # last sequence yielded, per log (workspace)
        self.reconnects = 0

    def __aiter__(self) -> AsyncIterator[event_pb2.Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[event_pb2.Event]:
        while True:
            request = event_service_pb2.SubscribeEventsRequest(
                workspaces=self._workspaces,
                conversation=self._conversation,
                event_types=self._event_types,
                resume_token=self.resume_token,
            )
            call = self._stub.SubscribeEvents(request)
            try:
                async for frame in call:
                    self._backoff.reset()
                    kind = frame.WhichOneof("frame")
                    if kind == "heartbeat":
                        self.resume_token = frame.heartbeat.resume_token or self.resume_token
                    elif kind == "replay_unavailable":
                        gap = frame.replay_unavailable
                        # A log that restarted (an in-memory log after a server restart)
                        # numbers from its oldest event again: take those, they are new.
                        seen = self._last.get(gap.workspace, 0)
                        self._last[gap.workspace] = min(seen, gap.oldest_available_sequence - 1)
                        if self._on_gap is not None:
                            self._on_gap(gap)
                    elif kind == "event":
                        event = frame.event
                        if event.sequence <= self._last.get(event.workspace, 0):
                            continue  # already yielded before a reconnect
                        self._last[event.workspace] = event.sequence
                        self.resume_token = event.resume_token or self.resume_token
                        yield event
                error: CortexError | None = None  # ended with OK: reconnect all the same
            except grpc.RpcError as failure:
                error = CortexError.from_rpc_error(failure)
                self.resume_token = (
                    error.metadata.get("resume_token")
                    or _trailer(failure, _RESUME_TRAILER)
                    or self.resume_token
                )
                if not retryable(error) or self._backoff.exhausted():
                    raise error from failure
            finally:
                call.cancel()
            delay = self._backoff.delay(error)
            log.info("event stream ended (%s); resuming in %.2fs", error or "OK", delay)
            await asyncio.sleep(delay)
            self.reconnects += 1


async def watch_task(
    channel: grpc.aio.Channel,
    name: str,
    *,
    after_sequence: int = 0,
    backoff: Backoff | None = None,
) -> AsyncIterator[expert_service_pb2.WatchTaskResponse]:
    """Yields each frame of ``WatchTask(name)`` once (heartbeats aside) until the task is
    terminal, reconnecting with the last ``sequence`` seen as ``after_sequence``."""
    stub = expert_service_pb2_grpc.ExpertServiceStub(channel)
    backoff = backoff or Backoff()
    last = after_sequence
    while True:
        call = stub.WatchTask(expert_service_pb2.WatchTaskRequest(name=name, after_sequence=last))
        try:
            async for frame in call:
                backoff.reset()
                if frame.WhichOneof("frame") == "heartbeat":
                    continue
                if frame.sequence and frame.sequence <= last:
                    continue
                last = max(last, frame.sequence)
                yield frame
            return  # the server closes with OK after the terminal frame
        except grpc.RpcError as failure:
            error = CortexError.from_rpc_error(failure)
            resume = error.metadata.get("after_sequence", "")
            if resume.isdigit():
                last = max(last, int(resume))
            if not retryable(error) or backoff.exhausted():
                raise error from failure
        finally:
            call.cancel()
        delay = backoff.delay(error)
        log.info("task watch ended (%s); resuming after %d in %.2fs", error, last, delay)
        await asyncio.sleep(delay)


def _trailer(error: grpc.RpcError, key: str) -> str:
    trailers: Any = error.trailing_metadata() or ()  # type: ignore[attr-defined,unused-ignore]
    for name, value in trailers:
        if name == key and isinstance(value, str):
            return value
    return ""
