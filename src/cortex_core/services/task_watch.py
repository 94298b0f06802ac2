"""Who may watch which task, and for how long: the policy of ``WatchTask`` streams.

The task's journal in the database is the truth (written by the task runtime in
the transaction of the change each frame reports); this module only follows it.
A watch is a subscription of the process's :class:`~cortex_core.services.event_hub.EventHub`
over the journal seen as an event log (one stream per task, :class:`JournalLog`),
so it inherits the hub's guarantees and its one reader per watched task, however
many watch it:

* frames arrive in ``sequence`` order from ``after_sequence`` on, with no gap and
  no duplicate: replayed from the journal at the watcher's pace, then live;
* when the journal was pruned past ``after_sequence`` a :class:`JournalPruned`
  comes first, then the task as it is now (a snapshot at the same resume point,
  ``oldest_sequence - 1``), then the retained frames from ``oldest_sequence`` on;
* live frames wait in a bounded per-watcher queue; a watcher that lets it fill
  is ended with RESOURCE_EXHAUSTED / SUBSCRIBER_TOO_SLOW;
* a :class:`~cortex_core.domain.event_records.Heartbeat` when nothing was sent
  for ``heartbeat`` seconds.

The wake-up for live frames is the runtime's journal ``wait`` (Redis or
in-process); :class:`JournalLog` adds the poll fallback: a wait that brings no
news reports every watched task as changed, so each is re-read at least every
``poll`` seconds even if a wake-up was lost.

While it is open a watch ends

* with NOT_FOUND (TASK_NOT_FOUND) when its caller is no longer a member of the
  task's workspace (access is checked again at every heartbeat);
* with UNAUTHENTICATED (SESSION_REVOKED, TOKEN_EXPIRED) when its caller's
  session ends (:class:`~cortex_core.services.session_guard.SessionWatcher`);
* with UNAVAILABLE / SERVER_SHUTTING_DOWN and RetryInfo when the server drains
  (:meth:`TaskWatches.close_all`);
* normally (the iterator stops) right after the frame that shows the task in a
  terminal state.

Every error that ends a watch early carries its resume point,
``ErrorInfo.metadata["after_sequence"]``: the last ``sequence`` it yielded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Protocol

from cortex_core import errors
from cortex_core.domain.event_records import (
    MAX_SEQUENCE,
    EventEnvelope,
    EventKind,
    EventRead,
    EventRecord,
    Heartbeat,
    ReplayUnavailable,
    ResumeToken,
)
from cortex_core.domain.events import TASK_STREAM_PREFIX, task_stream
from cortex_core.domain.identity import Caller
from cortex_core.domain.tasks import JournalEntry, JournalKind, JournalRead, Task
from cortex_core.services.event_hub import EventHub, SubscriberTooSlow, Subscription
from cortex_core.services.session_guard import SessionWatcher, Watch

STREAM_PREFIX = TASK_STREAM_PREFIX
_ENVELOPE = EventEnvelope(EventKind.TASK_STATE_CHANGED)
# A wait that returned after this share of its timeout is taken for the timeout itself.
_TIMED_OUT = 0.95


# --- what the runtime provides (wip/tasks) -------------------------------------------


class TaskJournal(Protocol):
    """The runtime's journal API (``services/tasks.py::Tasks``)."""

    async def open_journal(self, caller: Caller, workspace_id: str, task_id: str) -> Task:
        """The task, access checked as GetTask (NOT_FOUND, TASK_NOT_FOUND); its
        ``last_sequence`` is the journal's end now."""
        ...

    async def read_journal(self, task_id: str, after_sequence: int, limit: int) -> JournalRead:
        """Entries after ``after_sequence`` from the database; Unavailable when it is down."""
        ...

    async def wait_journal(self, task_id: str, after_sequence: int, max_wait: float, /) -> None:
        """Return once an entry after ``after_sequence`` was announced (from any
        replica), or after ``max_wait`` seconds (the caller reads either way)."""
        ...


# --- the journal as an event log -----------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _FrameRecord(EventRecord):
    """An event record that carries the journal's domain frame as it is."""

    entry: JournalEntry | None = None


class JournalLog:
    """The task journal seen through the :class:`~cortex_core.ports.EventLog` port
    (read and wait only: the runtime appends), for the event hub."""

    def __init__(self, journal: TaskJournal, *, poll: float) -> None:
        self._journal = journal
        self._poll = poll

    async def append(
        self, stream: str, event_id: str, envelope: EventEnvelope, payload: bytes, now: datetime
    ) -> EventRecord:
        raise NotImplementedError("the task runtime appends to its journal")

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        if not 0 <= after_sequence <= MAX_SEQUENCE:
            raise ValueError("after_sequence out of range")
        task_id = stream.removeprefix(STREAM_PREFIX)
        page = await self._journal.read_journal(task_id, after_sequence, limit)
        records = tuple(
            _FrameRecord(stream, e.sequence, "", e.time, _ENVELOPE, b"", e) for e in page.entries
        )
        return EventRead(records, page.oldest_sequence, page.last_sequence)

    async def wait(self, cursors: Mapping[str, int], max_wait: float) -> set[str]:
        """The streams whose task announced news within ``max_wait`` (at most ``poll``)
        seconds; every stream when none did (the poll fallback: a lost wake-up costs
        at most one interval)."""
        wait = min(max_wait, self._poll)
        positions = dict(cursors)
        if not positions:
            await asyncio.sleep(wait)
            return set()
        loop = asyncio.get_running_loop()
        started = loop.time()
        waits = {
            asyncio.ensure_future(
                self._journal.wait_journal(stream.removeprefix(STREAM_PREFIX), after, wait)
            ): stream
            for stream, after in positions.items()
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
        if loop.time() - started >= wait * _TIMED_OUT:
            return set(cursors)  # a timeout, not a wake-up: poll every stream
        return {waits[w] for w in done}

    async def close(self) -> None:
        return None


# --- watches -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class JournalPruned:
    """Frames before ``oldest_sequence`` that the watcher asked for are gone."""

    oldest_sequence: int


WatchItem = JournalEntry | JournalPruned | Heartbeat


def _resume_point(after_sequence: int) -> dict[str, str]:
    return {"after_sequence": str(after_sequence)}


def too_slow(after_sequence: int) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        "the watcher fell too far behind; watch again with after_sequence",
        reason="SUBSCRIBER_TOO_SLOW",
        metadata=_resume_point(after_sequence),
    )


class TaskWatches:
    """Opens watches for callers (see the module docstring); one per process."""

    def __init__(
        self,
        *,
        journal: TaskJournal,
        sessions: SessionWatcher,
        heartbeat: float,
        queue_size: int,
        poll: float,
    ) -> None:
        self._journal = journal
        self._hub = EventHub(JournalLog(journal, poll=poll), poll_interval=poll)
        self._sessions = sessions
        self._heartbeat = heartbeat
        self._queue_size = queue_size
        self._closing: Callable[[int], errors.CortexError] | None = None

    @property
    def active(self) -> int:
        return self._hub.active_subscriptions

    async def open(
        self, caller: Caller, workspace_id: str, task_id: str, after_sequence: int
    ) -> TaskWatch:
        """A :class:`TaskWatch` to enter with ``async with``.

        Raises NotFound (TASK_NOT_FOUND) for a task the caller may not see and
        InvalidArgument for an ``after_sequence`` below 0 or past the journal's end.
        """
        if after_sequence < 0:
            raise _bad_after("must not be negative")
        task = await self._journal.open_journal(caller, workspace_id, task_id)
        if after_sequence > task.last_sequence:
            raise _bad_after(f"the task's journal ends at {task.last_sequence}")
        start = after_sequence if after_sequence else task.last_sequence
        snapshot = None if after_sequence else current_snapshot(task)
        subscription = self._hub.subscribe(
            {task_stream(task_id): start},
            queue_size=self._queue_size,
            heartbeat=self._heartbeat,
        )
        watch = TaskWatch(self, subscription, caller, (workspace_id, task_id), start, snapshot)
        if task.state.terminal and after_sequence >= task.last_sequence:
            watch._done = True  # replayed to its end already: nothing more will come
        return watch

    def close_all(self, error: Callable[[int], errors.CortexError]) -> int:
        """End every watch, now and opened later, with ``error(after_sequence)`` (its
        own resume point); return how many were open."""
        self._closing = error

        def with_position(token: str) -> errors.CortexError:
            positions = ResumeToken.decode(token).positions
            return error(next(iter(positions.values()), 0))

        return self._hub.close_all(with_position)

    async def aclose(self) -> None:
        await self._hub.aclose()


def _bad_after(description: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(
        f"after_sequence {description}",
        [errors.FieldViolation("after_sequence", description, "OUT_OF_RANGE")],
    )


class TaskWatch:
    """One caller's watch of one task: an async context manager and an async
    iterator of journal entries (a watch from 0 starts with :func:`current_snapshot`),
    :class:`JournalPruned` and ``Heartbeat``.

    ``after_sequence`` is always the last sequence yielded (the resume point)."""

    __slots__ = (
        "_caller",
        "_done",
        "_exits",
        "_ids",
        "_session",
        "_snapshot",
        "_stand_in",
        "_subscription",
        "_watches",
        "after_sequence",
    )

    def __init__(
        self,
        watches: TaskWatches,
        subscription: Subscription,
        caller: Caller,
        ids: tuple[str, str],
        start: int,
        snapshot: JournalEntry | None,
    ) -> None:
        self._watches = watches
        self._ids = ids
        self._subscription = subscription
        self._caller = caller
        self._snapshot = snapshot
        self._stand_in = False
        self._session: Watch | None = None
        self._exits = contextlib.ExitStack()
        self._done = False
        self.after_sequence = start

    async def __aenter__(self) -> TaskWatch:
        self._session = self._exits.enter_context(self._watches._sessions.watch(self._caller))
        try:
            await self._subscription.__aenter__()
        except BaseException:
            self._exits.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exits.close()
        await self._subscription.__aexit__(exc_type, exc, tb)

    def __aiter__(self) -> TaskWatch:
        return self

    async def __anext__(self) -> WatchItem:
        if self._done:
            raise StopAsyncIteration
        session = self._session
        assert session is not None, "enter the watch with async with first"
        if self._snapshot is not None:
            item, self._snapshot = self._snapshot, None
            stand_in, self._stand_in = self._stand_in, False
            # The opening snapshot may be the end; a stand-in for pruned frames is not
            # (the retained frames, up to the journal's own terminal snapshot, follow).
            return item if stand_in else self._frame(item)
        closing = self._watches._closing
        if closing is not None:
            raise closing(self.after_sequence)
        try:
            record = await session.interruptible(self._subscription.__anext__())
        except SubscriberTooSlow:
            raise too_slow(self.after_sequence) from None
        except errors.Unavailable as exc:
            if "resume_token" in exc.metadata:
                raise errors.Unavailable(
                    exc.message, reason=exc.reason, metadata=_resume_point(self.after_sequence)
                ) from None
            raise
        if isinstance(record, _FrameRecord):
            assert record.entry is not None
            return self._frame(record.entry)
        if isinstance(record, ReplayUnavailable):
            # What was lost is said, then the task as it is now stands in for it (at
            # the same resume point); the retained frames follow.
            resume = record.oldest_available - 1
            task = await session.interruptible(
                self._watches._journal.open_journal(self._caller, *self._ids)
            )
            self._snapshot = dataclasses.replace(current_snapshot(task), sequence=resume)
            self._stand_in = True
            self.after_sequence = resume
            return JournalPruned(record.oldest_available)
        if isinstance(record, Heartbeat):
            # Access again (the caller may have left the workspace): NOT_FOUND ends the
            # watch. The session is re-checked by its Watch on its own timer.
            await session.interruptible(
                self._watches._journal.open_journal(self._caller, *self._ids)
            )
            return record
        raise TypeError(f"unexpected journal item {type(record).__name__}")

    def _frame(self, entry: JournalEntry) -> JournalEntry:
        self.after_sequence = entry.sequence
        body = entry.body
        if entry.kind is JournalKind.TASK and isinstance(body, Task) and body.state.terminal:
            self._done = True
        return entry


def current_snapshot(task: Task) -> JournalEntry:
    """The task as it is, as the snapshot at its ``last_sequence`` (what a watch from
    0 starts with: resuming after that sequence misses nothing)."""
    return JournalEntry(
        task.id, task.last_sequence, JournalKind.TASK, task.attempt_count, task.update_time, task
    )
