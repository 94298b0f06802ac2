"""Calls in progress: Cortex's own admission, and how a draining server ends them.

Admission. grpc's own limits (``maximum_concurrent_rpcs``,
``grpc.server.max_pending_requests``) refuse with a bare status that cannot carry
details, so the server sets them out of the way and every call passes through
:meth:`StreamRegistry.admit` instead:

* at most ``max_calls`` calls run at once (0: no limit); a call that finds every
  slot taken waits in line for one, first come first served, up to ``max_waiting``
  callers; past that it is refused with ``RESOURCE_EXHAUSTED``, reason
  ``TOO_MANY_REQUESTS``, and a ``RetryInfo``;
* once the server drains, every new call (except health checks, which must keep
  answering ``NOT_SERVING``) and every caller still in line is refused with
  ``UNAVAILABLE``, reason ``SERVER_SHUTTING_DOWN``, and a ``RetryInfo``.

Drain (:meth:`StreamRegistry.tell_streams`, :meth:`interrupt`, :meth:`idle`):

* event subscriptions end at once through the hub, each with ``UNAVAILABLE`` /
  ``SERVER_SHUTTING_DOWN`` carrying its own resume token (``ErrorInfo.metadata
  ["resume_token"]`` and the ``cortex-resume-token`` trailer);
* streams that finish on their own (replies) keep running until the grace ends;
* every other stream (health ``Watch``) is interrupted at once; the interceptor
  turns that into the same ``UNAVAILABLE`` status;
* :meth:`idle` says when no call is left, so the process can exit then instead of
  waiting out the whole grace.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from cortex_core import errors
from cortex_core.services.event_hub import EventHub

SHUTDOWN_MESSAGE = "cortex-shutdown"
# How long a refused caller is told to wait before trying again (another replica, or
# this one when a slot frees); short on purpose: both conditions pass quickly.
RETRY_AFTER_SHUTDOWN = 1.0
RETRY_AFTER_BUSY = 0.5


def shutting_down(resume_token: str = "") -> errors.Unavailable:
    """The status of a call refused or ended because the server drains."""
    error = errors.Unavailable(
        "server is shutting down; reconnect",
        reason="SERVER_SHUTTING_DOWN",
        metadata={"resume_token": resume_token} if resume_token else None,
    )
    error.retry_after = RETRY_AFTER_SHUTDOWN
    return error


def too_many_requests() -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        "the server is busy; retry shortly",
        reason="TOO_MANY_REQUESTS",
        retry_after=RETRY_AFTER_BUSY,
    )


class StreamRegistry:
    """Counts calls in progress, admits new ones, and tracks open streams for the drain."""

    def __init__(
        self, hub: EventHub | None = None, *, max_calls: int = 0, max_waiting: int = 0
    ) -> None:
        self._hub = hub
        self._max_calls = max_calls
        self._max_waiting = max_waiting
        self._calls = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle = asyncio.Event()
        self._idle.set()
        # Tasks of calls in progress; the flag says whether the drain interrupts the
        # call at once (streams other than replies and events) or only at the end of
        # the grace (unary calls, replies, event streams the hub did not end).
        self._tasks: dict[asyncio.Task[object], bool] = {}
        self.draining = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def calls(self) -> int:
        """Calls admitted and not finished."""
        return self._calls

    async def admit(self, *, exempt: bool = False) -> None:
        """Take a slot for one call, waiting in line if every slot is taken.

        Raises ``Unavailable`` (SERVER_SHUTTING_DOWN) while draining unless
        ``exempt``, and ``ResourceExhausted`` (TOO_MANY_REQUESTS) when the line is
        full. A caller that got in must call :meth:`release` exactly once.
        """
        if self.draining and not exempt:
            raise shutting_down()
        if self._max_calls and self._calls >= self._max_calls and not exempt:
            if len(self._waiting) >= self._max_waiting:
                raise too_many_requests()
            turn = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await turn  # release() hands its slot over, already counted
            except BaseException:
                if turn.done() and not turn.cancelled() and turn.exception() is None:
                    self.release()  # the slot arrived as we were cancelled: pass it on
                else:
                    self._discard(turn)
                raise
            return
        self._take()

    def release(self) -> None:
        """Give a slot back: to the first caller in line, or to the pool."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._calls -= 1
        if self._calls == 0:
            self._idle.set()

    def add(self, task: asyncio.Task[object], *, interrupt_on_drain: bool = True) -> None:
        self._tasks[task] = interrupt_on_drain

    def discard(self, task: asyncio.Task[object]) -> None:
        self._tasks.pop(task, None)

    def begin_drain(self) -> None:
        """Refuse new calls and everyone still in line; calls in progress go on."""
        self.draining = True
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_exception(shutting_down())

    def tell_streams(self) -> int:
        """End event subscriptions with their resume tokens and interrupt the streams
        that do not finish on their own; return how many were told."""
        told = self._hub.close_all(shutting_down) if self._hub is not None else 0
        return told + self.interrupt(everything=False)

    def interrupt(self, *, everything: bool = True) -> int:
        """Interrupt calls in progress (all, or only those marked at :meth:`add`); the
        interceptor ends each with UNAVAILABLE / SERVER_SHUTTING_DOWN."""
        tasks = [task for task, flagged in self._tasks.items() if everything or flagged]
        for task in tasks:
            task.cancel(SHUTDOWN_MESSAGE)
        return len(tasks)

    async def idle(self) -> None:
        """Return once no call is in progress."""
        await self._idle.wait()

    def _take(self) -> None:
        self._calls += 1
        self._idle.clear()

    def _discard(self, turn: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(turn)
