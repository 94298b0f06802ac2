"""Calls in progress: Cortex's own admission, and how a draining server ends them.

Admission. grpc's own limits (``maximum_concurrent_rpcs``,
``grpc.server.max_pending_requests``) refuse with a bare status that cannot carry
details, so the server sets them out of the way and every call passes through
:meth:`StreamRegistry.admit` instead:

* at most ``max_calls`` calls run at once (0: no limit); a call that finds every
  slot taken waits in line for one, first come first served, up to ``max_waiting``
  callers; past that it is refused with ``RESOURCE_EXHAUSTED``, reason
  ``TOO_MANY_REQUESTS``, and a ``RetryInfo``;
* while the server drains, see below.

Drain, in two phases (driven by ``RunningServer.drain``):

1. :meth:`begin_drain` and :meth:`tell_streams`: event subscriptions end at once
   through the hub, each with ``UNAVAILABLE`` / ``SERVER_SHUTTING_DOWN``, a
   ``RetryInfo`` and its own resume token (``ErrorInfo.metadata["resume_token"]``
   and the ``cortex-resume-token`` trailer), also one that opens during the drain;
   task watches likewise, with ``ErrorInfo.metadata["after_sequence"]``;
   other long-lived streams (health ``Watch``) end, or are refused, with the same
   status. Unary calls and replies go on, and new ones are still served: under
   load a call can wait in grpc's queue well after it was sent, so one arriving
   now may have been sent before SIGTERM, and refusing it would cut an in-flight
   call. Health turning ``NOT_SERVING`` is what steers new traffic away.
2. Once the server has :meth:`settled` (nothing in progress and nothing new for
   ``quiet`` seconds) or the grace is nearly over, :meth:`stop_admitting`: every
   new call and every caller still in line is refused with ``UNAVAILABLE``,
   ``SERVER_SHUTTING_DOWN`` and a ``RetryInfo`` (health checks still answer), and
   what is still running is :meth:`interrupt`-ed, which the interceptor turns into
   the same status, never ``CANCELLED``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from cortex_core import errors
from cortex_core.services.event_hub import EventHub
from cortex_core.services.task_watch import TaskWatches

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


def watch_shutting_down(after_sequence: int) -> errors.Unavailable:
    """A WatchTask ended by the drain: reconnect with ``after_sequence``."""
    error = errors.Unavailable(
        "server is shutting down; watch again with after_sequence",
        reason="SERVER_SHUTTING_DOWN",
        metadata={"after_sequence": str(after_sequence)},
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
    """Admits calls, counts those in progress and tracks their tasks for the drain.

    (Named for what it first held, open streams; it now sees every call.)"""

    def __init__(
        self,
        hub: EventHub | None = None,
        *,
        max_calls: int = 0,
        max_waiting: int = 0,
        task_watches: TaskWatches | None = None,
    ) -> None:
        self._hub = hub
        self._task_watches = task_watches
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
        self._refusing = False
        self._last_admitted = 0.0  # time.monotonic(), kept while draining

    def __len__(self) -> int:
        """Calls in progress past admission (streams and unary calls alike)."""
        return len(self._tasks)

    @property
    def calls(self) -> int:
        """Calls admitted and not finished."""
        return self._calls

    async def admit(self, *, exempt: bool = False, interrupt_on_drain: bool = False) -> None:
        """Take a slot for one call, waiting in line if every slot is taken.

        ``exempt`` calls (health checks) skip the limit and are never refused;
        ``interrupt_on_drain`` ones (streams the drain ends at once) are refused from
        the start of the drain. Raises ``Unavailable`` (SERVER_SHUTTING_DOWN, with
        RetryInfo) when refused for the drain, and ``ResourceExhausted``
        (TOO_MANY_REQUESTS, with RetryInfo) when the line is full. A caller that
        got in must call :meth:`release` exactly once.
        """
        if self.draining:
            if interrupt_on_drain or (self._refusing and not exempt):
                raise shutting_down()
            if not exempt:  # a health probe says nothing about grpc's backlog
                self._last_admitted = time.monotonic()
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
        self._calls += 1
        self._idle.clear()

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
        """Phase 1: long-lived streams are refused from now on; the rest is served."""
        self.draining = True
        self._last_admitted = time.monotonic()

    def stop_admitting(self) -> None:
        """Phase 2: refuse every new call (health checks aside) and everyone in line."""
        self.draining = self._refusing = True
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_exception(shutting_down())

    def tell_streams(self) -> int:
        """End event subscriptions with their resume tokens and interrupt the streams
        that do not finish on their own; return how many were told."""
        told = self._hub.close_all(shutting_down) if self._hub is not None else 0
        if self._task_watches is not None:
            told += self._task_watches.close_all(watch_shutting_down)
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

    async def settled(self, quiet: float) -> None:
        """Return once no call is in progress and none was admitted for ``quiet``
        seconds (the backlog of calls sent before the drain has been served)."""
        while True:
            await self._idle.wait()
            wait = self._last_admitted + quiet - time.monotonic()
            if wait <= 0 and self._calls == 0:
                return
            await asyncio.sleep(max(wait, 0.0))

    def _discard(self, turn: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiting.remove(turn)
