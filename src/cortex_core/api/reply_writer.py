"""Writing a reply's frames: text that arrives while a write is in flight rides
along in the next ``delta`` instead of waiting for a write of its own.

A gRPC write in grpc.aio costs about 150 µs of server CPU when the stream is
fed from another socket (the provider's), far more than a model's token costs
to parse: writing one frame per token, Cortex could relay a fast provider's
tokens at a third of the rate a client reading the provider itself gets (a bare
grpc.aio relay over the same SDK does no better; measured with
``bench.replies``). So frames are written by a task of their own, one write at
a time, each as soon as the one before it is done; the text of the deltas that
arrive meanwhile is joined into the next ``delta``. When the provider is slower
than a write (any real model), every piece still goes out alone and at once;
when it is faster, the client gets the same text, in order, in fewer frames.
Other frames are never merged and keep their place.

The reply's own work stays in the call's task (cancellation, the session
watch); only the writes move. A write's failure (the client went away) is
raised in the call's task at its next frame or at :meth:`ReplyWriter.flush`.
At most ``limit`` frames wait; past that the call waits for the writer, so a
client that stops reading holds back the reply as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from types import TracebackType
from typing import Any, Self

from cortex.context.v1 import conversation_service_pb2 as pb

from cortex_core.api.context import ServicerContext

WAITING_FRAMES = 16


class ReplyWriter:
    """Writes ``SendMessageResponse`` frames to ``context``; see the module docstring.

    Use as ``async with``; leaving it normally or with an error of the reply's
    flushes every frame, leaving it cancelled stops the writer.
    """

    def __init__(self, context: ServicerContext, *, limit: int = WAITING_FRAMES) -> None:
        self._context = context
        self._limit = limit
        self._frames: deque[pb.SendMessageResponse | list[str]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.flush()
            return
        if isinstance(exc, Exception):
            # The reply failed (e.g. UNAUTHENTICATED): what it said before still goes
            # out ahead of the status, as when every frame was written in the call.
            with contextlib.suppress(Exception):
                await self.flush()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # its outcome is moot: the call already failed

    async def text(self, text: str) -> None:
        """A ``delta``: joined with the text before it while neither is written yet."""
        frames = self._frames
        if frames and isinstance(frames[-1], list):
            frames[-1].append(text)
        else:
            await self._put([text])

    async def frame(self, frame: pb.SendMessageResponse) -> None:
        await self._put(frame)

    async def flush(self) -> None:
        """Wait until every frame is written; raise what a write raised."""
        while self._task is not None:
            task = self._task
            await asyncio.shield(task)
            if self._task is task:
                self._task = None
                task.result()

    async def _put(self, item: pb.SendMessageResponse | list[str]) -> None:
        self._raise_failure()
        while len(self._frames) >= self._limit:
            self._room.clear()
            await self._room.wait()
            self._raise_failure()
        self._frames.append(item)
        if self._task is None:
            self._task = asyncio.create_task(self._write())

    def _raise_failure(self) -> None:
        task = self._task
        if task is not None and task.done():
            self._task = None
            task.result()

    async def _write(self) -> None:
        frames, context = self._frames, self._context
        try:
            while frames:
                item = frames.popleft()
                self._room.set()
                message: Any = (
                    pb.SendMessageResponse(delta=pb.ReplyDelta(text="".join(item)))
                    if isinstance(item, list)
                    else item
                )
                await context.write(message)
            self._task = None  # done; a failed task stays, for the call to raise
        finally:
            self._room.set()  # a call waiting for room sees the failure
