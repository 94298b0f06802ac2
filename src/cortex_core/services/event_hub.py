"""Process-local fan-out of an :class:`~cortex_core.ports.EventLog` to subscribers.

The log is the source of truth; the hub only decides who sees what, when::

    EventLog ──wait()──▶ watcher task ──wake──▶ one reader task per stream
                                                   │ offers new records to
    EventHub.published(record) ───────────────────▶│ (appends made here: no
                                                   ▼  wake-up, no read)
                              Subscription (bounded queue, per-stream cursors)
                                   ▲ replays from the log itself until it has
                                   │ caught up with its stream's reader

Appends made by this process (the relay) are handed to :meth:`EventHub.published`,
which offers the record to local subscribers at once when it is the next one of
its stream; the log's wake-up only brings what other processes appended (or a
record that arrived out of order, which the reader then reads).

Guarantees, per stream of a subscription: records arrive in sequence order, with
no gap and no duplicate, from the requested position on; when the position is
older than retention a :class:`ReplayUnavailable` comes first and says so.
``Subscription.resume_token`` is always exactly what has been yielded.

How: a subscription starts each stream in *replay*: it reads the log itself (at the
consumer's pace, so a long replay never fills a queue) until it has read at least
as far as the stream's reader has dispatched; at that instant, with no ``await`` in
between, it turns *live* and the reader's later records go to its queue. Anything
at or below the last delivered sequence is dropped (dedupe); a record beyond the
next one (a gap) sends the stream back to replay. A live queue that would exceed
``queue_size`` ends the subscription with :class:`SubscriberTooSlow`.

Filters: a subscription may carry ``accept``, a predicate over each record's
:class:`EventEnvelope`. It is applied before the queue (live) and before the replay
buffer, so a subscriber only ever holds, and is only woken for, what it accepts:
a burst in other conversations can never make it too slow. A record it does not
accept still advances its position: at once when nothing of that stream is queued,
otherwise when the record queued before it is yielded; heartbeats carry it.

A subscription may also be *narrowed* to one conversation (``conversation``): it then
accepts nothing about another conversation, and the hub offers it only the records
about its conversation or about none, from an index per stream, so a record costs the
subscribers it may concern instead of every subscriber of the workspace (a burst over
1,000 conversations, each watched, was a million filter calls per thousand events).
What it is not offered moves its position as a filtered-out record does; the move is
made when the position is read (the resume token), not record by record.

Tasks: one reader per stream with at least one subscriber (reference counted), one
watcher while any reader exists. Exiting ``async with`` frees its registrations and
waits for the tasks it stopped. Log failures end the affected subscriptions with
``Unavailable`` carrying ``metadata["resume_token"]``; nothing swallows cancellation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

from cortex_core.domain.event_records import (
    EventEnvelope,
    EventRecord,
    Heartbeat,
    ReplayUnavailable,
    SubscriptionItem,
    encode_positions,
)
from cortex_core.errors import CortexError, ResourceExhausted, Unavailable
from cortex_core.ports import EventLog, Metrics

__all__ = [
    "Accept",
    "EventHub",
    "Heartbeat",
    "ReplayUnavailable",
    "SubscriberTooSlow",
    "Subscription",
]

logger = logging.getLogger(__name__)

READER_TASK = "cortex-events-reader"
WATCH_TASK = "cortex-events-watch"
# The loop's clock ticks in milliseconds (uvloop): a timer may fire up to one early.
_EARLY = 0.001
_TOKENS = 4096  # resume tokens remembered per hub (subscribers at one position share one)

Accept = Callable[[EventEnvelope], bool]
"""A subscription's filter: True for the records it wants (see the module docstring)."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Skipped:
    """In the replay buffer: records of ``stream`` up to ``sequence`` were filtered out."""

    stream: str
    sequence: int


class SubscriberTooSlow(ResourceExhausted):
    """The subscriber's queue overflowed; reconnect with ``resume_token`` to continue."""

    def __init__(self, resume_token: str) -> None:
        super().__init__(
            "the subscriber fell too far behind; resubscribe with its resume_token",
            reason="SUBSCRIBER_TOO_SLOW",
            metadata={"resume_token": resume_token},
        )
        self.resume_token = resume_token


class _Feed:
    """One stream's reader: everything up to ``cursor`` has been offered to subscribers
    (``offered`` catches up with it once an offer has reached every subscriber)."""

    __slots__ = (
        "broad",
        "cursor",
        "narrow",
        "offered",
        "ready",
        "stream",
        "subscribers",
        "task",
        "wake",
    )

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.subscribers: set[Subscription] = set()
        self.broad: set[Subscription] = set()  # offered every record
        self.narrow: dict[str, set[Subscription]] = {}  # by conversation: see the docstring
        self.cursor: int | None = None  # None until the reader has looked at the log
        self.offered = 0
        self.ready = asyncio.Event()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, subscription: Subscription) -> None:
        self.subscribers.add(subscription)
        key = subscription.conversation
        if key:
            self.narrow.setdefault(key, set()).add(subscription)
        else:
            self.broad.add(subscription)

    def discard(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        key = subscription.conversation
        group = self.narrow.get(key) if key else None
        if group is None:
            self.broad.discard(subscription)
            return
        group.discard(subscription)
        if not group:
            del self.narrow[key]

    def offer(self, records: tuple[EventRecord, ...]) -> None:
        """Offer ``records`` (the next ones after ``offered``, in order) to the
        subscribers they may concern."""
        stream = self.stream
        for subscription in list(self.broad):
            subscription._offer(stream, records)
        narrow = self.narrow
        if narrow:
            concerned: dict[Subscription, list[EventRecord]] = {}
            for record in records:
                key = record.envelope.conversation_id
                groups = (narrow.get(key, ()),) if key else narrow.values()
                for group in groups:
                    for subscription in group:
                        concerned.setdefault(subscription, []).append(record)
            for subscription, some in concerned.items():
                subscription._offer(stream, tuple(some))
        self.offered = records[-1].sequence


class EventHub:
    """Serves subscriptions over ``log`` in this process; see the module docstring.

    ``batch_size`` bounds one log read; ``poll_interval`` bounds one ``log.wait``.
    """

    def __init__(
        self,
        log: EventLog,
        *,
        batch_size: int = 256,
        poll_interval: float = 5.0,
        max_backoff: float = 2.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._log = log
        self._metrics = metrics
        self._batch = batch_size
        self._poll = poll_interval
        self._max_backoff = max_backoff
        self._feeds: dict[str, _Feed] = {}
        self._subscriptions: set[Subscription] = set()
        self._stopping: set[asyncio.Future[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._feeds_changed = asyncio.Event()
        # Heartbeats: one timer for the hub over a heap of [deadline, tiebreak, subscription]
        # with at most one entry per subscription; see Subscription._beat_due.
        self._beats: list[list[Any]] = []
        self._beat_order = itertools.count()
        self._beat_timer: asyncio.TimerHandle | None = None
        self._beat_at = math.inf
        # Encoded resume tokens by positions (in a subscription's insertion order).
        self._tokens: dict[tuple[tuple[str, int], ...], str] = {}
        # Set by close_all: every subscription, also one entered later, ends with it.
        self._closing: Callable[[str], CortexError] | None = None

    @property
    def log(self) -> EventLog:
        return self._log

    @property
    def active_subscriptions(self) -> int:
        """Subscriptions inside their ``async with``."""
        return len(self._subscriptions)

    @property
    def active_streams(self) -> int:
        """Streams with a reader task in this process."""
        return len(self._feeds)

    def subscribe(
        self,
        positions: Mapping[str, int | None],
        *,
        queue_size: int,
        heartbeat: float,
        accept: Accept | None = None,
        conversation: str = "",
    ) -> Subscription:
        """A subscription to ``positions``' streams, to be entered with ``async with``.

        A position is the last sequence the caller has (replay everything after it,
        then live) or None (live only: everything after the current last sequence).
        ``accept`` (None: everything) filters records before they are queued;
        ``conversation`` narrows it further to records about that conversation or
        about none (see the module docstring).
        Entering raises Unavailable when the log cannot be reached.
        """
        if queue_size < 1 or heartbeat <= 0:
            raise ValueError("queue_size must be at least 1 and heartbeat positive")
        return Subscription(
            self,
            positions,
            queue_size=queue_size,
            heartbeat=heartbeat,
            accept=accept,
            conversation=conversation,
        )

    def published(self, record: EventRecord) -> None:
        """An append this process made (the relay calls this right after it).

        When ``record`` is the next of its stream, this process's subscribers are
        offered it now, without waiting for the log's wake-up and a read; when an
        earlier append is still in flight, the stream's reader reads the log instead.
        """
        feed = self._feeds.get(record.stream)
        if feed is None or feed.cursor is None or record.sequence <= feed.cursor:
            return
        if record.sequence != feed.cursor + 1:
            feed.wake.set()
            return
        feed.cursor = record.sequence
        feed.offer((record,))

    async def aclose(self) -> None:
        """End every subscription (their iterators stop) and wait for the hub's tasks."""
        for subscription in list(self._subscriptions):
            subscription.close()
        await self._settle()

    def close_all(self, error: Callable[[str], CortexError]) -> int:
        """End every subscription, now and entered later: its iterator raises
        ``error(resume_token)`` with its own position (a draining server tells each
        client where to resume). Return how many were open."""
        self._closing = error
        subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close(error(subscription.resume_token))
        return len(subscriptions)

    def _expect_beat(self, subscription: Subscription, deadline: float) -> list[Any]:
        """Call ``subscription._beat_due`` at ``deadline`` (or a little after)."""
        entry = [deadline, next(self._beat_order), subscription]
        heapq.heappush(self._beats, entry)
        if deadline < self._beat_at:
            if self._beat_timer is not None:
                self._beat_timer.cancel()
            self._beat_at = deadline
            self._beat_timer = asyncio.get_running_loop().call_at(deadline, self._beat)
        return entry

    def _beat(self) -> None:
        self._beat_timer = None
        self._beat_at = math.inf
        beats = self._beats
        now = asyncio.get_running_loop().time() + _EARLY
        while beats and beats[0][0] <= now:
            subscription = heapq.heappop(beats)[2]
            if subscription is not None:
                subscription._beat_due(now)
        if beats and self._beat_timer is None:
            self._beat_at = beats[0][0]
            self._beat_timer = asyncio.get_running_loop().call_at(self._beat_at, self._beat)

    def _forget_beats(self) -> None:
        """No subscription is left: drop the heartbeat timer and its entries."""
        if self._beat_timer is not None:
            self._beat_timer.cancel()
            self._beat_timer = None
        self._beat_at = math.inf
        self._beats.clear()

    def _attach(self, stream: str, subscription: Subscription) -> _Feed:
        feed = self._feeds.get(stream)
        if feed is None:
            feed = self._feeds[stream] = _Feed(stream)
            feed.task = asyncio.create_task(self._read(feed), name=f"{READER_TASK}:{stream}")
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name=WATCH_TASK)
        feed.add(subscription)
        return feed

    def _detach(self, feed: _Feed, subscription: Subscription) -> None:
        feed.discard(subscription)
        if feed.subscribers:
            return
        if self._feeds.get(feed.stream) is feed:
            del self._feeds[feed.stream]
        self._stop(feed.task)
        if not self._feeds:
            self._stop(self._watcher)
            self._watcher = None

    def _stop(self, task: asyncio.Future[Any] | None) -> None:
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _settle(self) -> None:
        """Wait until every task this hub cancelled has finished."""
        current = asyncio.current_task()
        tasks = {task for task in self._stopping if task is not current}
        if tasks:
            await asyncio.wait(tasks)

    async def _read(self, feed: _Feed) -> None:
        """The stream's reader: offer each new record of the log to the live subscribers."""
        try:
            feed.cursor = feed.offered = (await self._log.read(feed.stream, 0, 0)).last_sequence
            feed.ready.set()
            self._feeds_changed.set()
            while True:
                feed.wake.clear()
                after = feed.cursor
                page = await self._log.read(feed.stream, after, self._batch)
                if page.last_sequence < after:
                    raise Unavailable("the event log was reset", reason="EVENT_LOG_UNAVAILABLE")
                # published() may have offered some of them while we read.
                records = tuple(r for r in page.records if r.sequence > feed.cursor)
                if not records:
                    if not page.records:
                        await feed.wake.wait()
                    continue
                feed.cursor = records[-1].sequence
                feed.offer(records)
        except CortexError as exc:
            self._fail(feed, exc.reason)
        except Exception:
            logger.exception("event reader for a stream failed")
            self._fail(feed, "EVENT_LOG_UNAVAILABLE")
        finally:
            feed.ready.set()

    def _fail(self, feed: _Feed, reason: str) -> None:
        if self._feeds.get(feed.stream) is feed:
            del self._feeds[feed.stream]
        for subscription in list(feed.subscribers):
            subscription._fail_unavailable(reason)

    async def _watch(self) -> None:
        """Turn the log's wake-ups into reader wake-ups; restart the wait when streams change."""
        backoff = 0.0
        while True:
            self._feeds_changed.clear()
            cursors = _Cursors(self._feeds)
            if not cursors:
                await self._feeds_changed.wait()
                continue
            waiting = asyncio.ensure_future(self._log.wait(cursors, self._poll))
            changed = asyncio.ensure_future(self._feeds_changed.wait())
            try:
                await asyncio.wait((waiting, changed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiting, changed):
                    task.add_done_callback(_retrieve)
                    self._stop(task)
            if not waiting.done() or waiting.cancelled():
                continue
            if waiting.exception() is None:
                backoff = 0.0
                woken = [self._feeds.get(stream) for stream in waiting.result()]
            else:
                # Every reader reads once: it fails its subscribers if the log is down.
                backoff = min(max(backoff * 2, 0.05), self._max_backoff)
                woken = list(self._feeds.values())
            for feed in woken:
                if feed is not None:
                    feed.wake.set()
            if backoff:
                await asyncio.sleep(backoff)


class _Cursors(Mapping[str, int]):
    """The readers' cursors, read live: the in-process log looks at them whenever it
    wakes up, so an append already handed to ``published`` does not wake the reader."""

    __slots__ = ("_feeds",)

    def __init__(self, feeds: dict[str, _Feed]) -> None:
        self._feeds = feeds

    def __getitem__(self, stream: str) -> int:
        cursor = self._feeds[stream].cursor
        if cursor is None:
            raise KeyError(stream)
        return cursor

    def __iter__(self) -> Iterator[str]:
        return iter([s for s, feed in self._feeds.items() if feed.cursor is not None])

    def __len__(self) -> int:
        return sum(1 for feed in self._feeds.values() if feed.cursor is not None)


class Subscription:
    """One subscriber's view: an async context manager and an async iterator of items.

    Yields :class:`EventRecord`, :class:`ReplayUnavailable` and :class:`Heartbeat`.
    The iterator raises :class:`SubscriberTooSlow` when the queue overflows,
    ``Unavailable`` (with ``metadata["resume_token"]``) when the log fails, or the
    error given to :meth:`close`; after :meth:`close` without an error it stops.
    """

    __slots__ = (
        "_accept",
        "_beat_entry",
        "_closed",
        "_conversation",
        "_delivered",
        "_error",
        "_feeds",
        "_heartbeat",
        "_hub",
        "_last_yield",
        "_loop",
        "_next",
        "_pending",
        "_queue",
        "_queue_size",
        "_queued",
        "_replaying",
        "_requested",
        "_tail",
        "_token",
        "_waiter",
    )

    def __init__(
        self,
        hub: EventHub,
        positions: Mapping[str, int | None],
        *,
        queue_size: int,
        heartbeat: float,
        accept: Accept | None = None,
        conversation: str = "",
    ) -> None:
        self._hub = hub
        self._conversation = conversation
        if conversation:
            inner = accept

            def accept(envelope: EventEnvelope) -> bool:
                return envelope.conversation_id in ("", conversation) and (
                    inner is None or inner(envelope)
                )

        self._accept = accept
        self._requested: dict[str, int | None] | None = dict(positions)  # until entered
        self._queue_size = queue_size
        self._heartbeat = heartbeat
        self._feeds: dict[str, _Feed] = {}
        self._delivered: dict[str, int] = {}  # what the resume token says
        self._replaying: dict[str, int] = {}  # stream -> last sequence read from the log
        # Live stream -> last sequence queued, filtered out or delivered.
        self._queued: dict[str, int] = {}
        # Live stream -> its last record put in the queue: once it is yielded, the
        # stream's position moves to _queued (past what was filtered out after it).
        self._tail: dict[str, int] = {}
        # Both queues exist only while they hold something.
        self._pending: deque[EventRecord | ReplayUnavailable | _Skipped] | None = None
        # Live records: the oldest in _next, the rest (if any) in _queue.
        self._next: EventRecord | None = None
        self._queue: deque[EventRecord] | None = None
        self._waiter: asyncio.Future[None] | None = None  # set while __anext__ waits
        self._beat_entry: list[Any] | None = None  # this subscription's entry in hub._beats
        self._token: str | None = None  # resume_token, until _delivered changes
        self._last_yield = 0.0
        self._closed = False
        self._error: CortexError | None = None

    @property
    def resume_token(self) -> str:
        """The position after the last yielded item, for every stream in the subscription."""
        if self._conversation:
            self._catch_up()
        token = self._token
        if token is None:
            key = tuple(self._delivered.items())
            tokens = self._hub._tokens
            token = tokens.get(key)
            if token is None:
                if len(tokens) >= _TOKENS:
                    tokens.clear()
                token = tokens[key] = encode_positions(self._delivered)
            self._token = token
        return token

    @property
    def conversation(self) -> str:
        """The conversation this subscription is narrowed to ("" for none)."""
        return self._conversation

    @property
    def streams(self) -> frozenset[str]:
        return frozenset(self._feeds)

    async def __aenter__(self) -> Subscription:
        self._hub._subscriptions.add(self)
        # Kept: on Python 3.11 every get_running_loop() is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._last_yield = self._loop.time()
        requested, self._requested = self._requested or {}, None
        try:
            for stream, after in requested.items():
                await self.add_stream(stream, after)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        if self._hub._closing is not None:
            self.close(self._hub._closing(self.resume_token))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closed = True
        self._release()
        self._hub._subscriptions.discard(self)
        if not self._hub._subscriptions:
            self._hub._forget_beats()
        await self._hub._settle()

    async def add_stream(self, stream: str, after: int | None = None) -> None:
        """Start delivering ``stream`` after ``after`` (None: its current last sequence)."""
        if after is not None and after < 0:
            raise ValueError("a position must not be negative")
        if stream in self._feeds or self._closed:
            return
        head = await self._hub._log.read(stream, 0, 0)
        if after is None:
            after = head.last_sequence
        if stream in self._feeds or self._closed:
            return
        self._delivered[stream] = after
        self._token = None
        self._replaying[stream] = after
        feed = self._feeds[stream] = self._hub._attach(stream, self)
        await feed.ready.wait()
        # Nothing to replay and the reader is not past us: live at once, so a consumer
        # that stops reading is noticed (SubscriberTooSlow) instead of being replayed later.
        caught_up = head.oldest_available <= after + 1 and after <= head.last_sequence
        ours = self._feeds.get(stream) is feed and self._replaying.get(stream) == after
        if ours and caught_up and feed.cursor is not None and feed.cursor <= after:
            del self._replaying[stream]
            self._queued[stream] = after
            self._tail.pop(stream, None)

    def remove_stream(self, stream: str) -> None:
        """Stop delivering ``stream`` at once (nothing more of it is yielded) and drop it
        from the resume token; e.g. when the caller lost access to it."""
        feed = self._feeds.pop(stream, None)
        if feed is None:
            return
        self._hub._detach(feed, self)
        for positions in (self._delivered, self._replaying, self._queued, self._tail):
            positions.pop(stream, None)
        self._token = None
        if self._pending:
            self._pending = deque(item for item in self._pending if item.stream != stream) or None
        if self._next is not None and self._next.stream == stream:
            self._next = None
        if self._queue:
            self._queue = deque(record for record in self._queue if record.stream != stream) or None

    def close(self, error: CortexError | None = None) -> None:
        """End the subscription: its iterator raises ``error``, or stops when None."""
        if not self._closed:
            self._closed = True
            self._error = error
        self._release()
        self._wake()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> SubscriptionItem:
        loop = self._loop
        while True:
            if self._closed:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            pending = self._pending
            if pending:
                item = pending.popleft()
                if not pending:
                    self._pending = None
                if isinstance(item, _Skipped):
                    self._skip(item.stream, item.sequence)
                    continue
                return self._deliver(item, loop)
            record = self._next
            if record is not None:
                self._next = None
            elif self._queue:
                record = self._queue.popleft()
                if not self._queue:
                    self._queue = None
            if record is not None:
                last = self._delivered.get(record.stream)
                if last is None or record.stream in self._replaying or record.sequence <= last:
                    continue  # removed, covered by the replay, or already delivered
                # _offer checked the sequence follows what was queued or filtered out.
                metrics = self._hub._metrics
                if metrics is not None:  # a live delivery: publish-to-delivery lag
                    metrics.event_delivered(time.time() - record.time.timestamp())
                return self._deliver(record, loop)
            if self._replaying:
                await self._replay_step(next(iter(self._replaying)))
                continue
            deadline = self._last_yield + self._heartbeat
            if deadline <= loop.time() + _EARLY:
                return self._deliver(Heartbeat(self.resume_token), loop)
            # One future per wait, resolved by _offer, close or the hub's heartbeat timer.
            waiter = self._waiter = loop.create_future()
            if self._beat_entry is None:
                self._beat_entry = self._hub._expect_beat(self, deadline)
            try:
                await waiter
            finally:
                self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _beat_due(self, now: float) -> None:
        """The hub's timer reached this subscription's entry (now: the loop's time).

        The entry's deadline is never later than the real one (``_last_yield`` only
        grows): move the entry there, or wake the waiting iterator for its heartbeat.
        """
        self._beat_entry = None
        if self._closed:
            return
        deadline = self._last_yield + self._heartbeat
        if deadline > now:
            self._beat_entry = self._hub._expect_beat(self, deadline)
        else:
            self._wake()  # if it is not waiting, it registers again when it does

    def _deliver(self, item: SubscriptionItem, loop: asyncio.AbstractEventLoop) -> SubscriptionItem:
        if isinstance(item, EventRecord):
            stream = item.stream
            sequence = item.sequence
            if self._tail.get(stream) == sequence:  # the last queued: skip what followed
                sequence = self._queued.get(stream, sequence)
            self._delivered[stream] = sequence
            self._token = None
        elif isinstance(item, ReplayUnavailable):
            self._delivered[item.stream] = item.oldest_available - 1
            self._token = None
        self._last_yield = loop.time()
        return item

    async def _replay_step(self, stream: str) -> None:
        """Read one page of ``stream`` into ``_pending``, or turn the stream live."""
        after = self._replaying[stream]
        try:
            page = await self._hub._log.read(stream, after, self._hub._batch)
        except Unavailable as exc:
            self._fail_unavailable(exc.reason)
            return
        if self._closed or self._replaying.get(stream) != after:
            return  # closed or removed while we read
        reset = after > page.last_sequence
        if reset or after + 1 < page.oldest_available:
            self._pending_queue().append(ReplayUnavailable(stream, after, page.oldest_available))
            after = self._replaying[stream] = page.oldest_available - 1
            if reset:
                return
        if page.records:
            accept = self._accept
            if accept is None:
                self._pending_queue().extend(page.records)
            else:
                pending = self._pending_queue()
                pending.extend(r for r in page.records if accept(r.envelope))
                last = page.records[-1]
                if not pending or pending[-1] is not last:
                    pending.append(_Skipped(stream, last.sequence))
            self._replaying[stream] = page.records[-1].sequence
            return
        feed = self._feeds[stream]
        if feed.cursor is None:
            await feed.ready.wait()
            return
        if feed.cursor > after:
            return  # the reader dispatched past what we read: read again
        # Caught up with the reader, and no await since the check: go live.
        del self._replaying[stream]
        self._queued[stream] = after
        self._tail.pop(stream, None)

    def _skip(self, stream: str, sequence: int) -> None:
        """Records of ``stream`` up to ``sequence`` were filtered out: move past them."""
        last = self._delivered.get(stream)
        if last is not None and sequence > last:
            self._delivered[stream] = sequence
            self._token = None

    def _pending_queue(self) -> deque[EventRecord | ReplayUnavailable | _Skipped]:
        if self._pending is None:
            self._pending = deque()
        return self._pending

    def _offer(self, stream: str, records: tuple[EventRecord, ...]) -> None:
        """Called by the stream's reader with records in sequence order."""
        last = self._queued.get(stream)
        if last is None or self._closed or stream in self._replaying:
            return
        accept = self._accept
        queued_any = False
        for record in records:
            sequence = record.sequence
            if sequence <= last:
                continue
            if sequence != last + 1 and self._conversation:
                # Not offered: about other conversations (the feed's index).
                last = sequence - 1
                self._passed(stream, last)
            elif sequence != last + 1:  # a gap: fill it from the log
                self._replaying[stream] = self._delivered[stream]
                del self._queued[stream]
                self._tail.pop(stream, None)
                queued_any = True
                break
            if accept is not None and not accept(record.envelope):
                last = sequence
                self._passed(stream, sequence)
                continue
            queue = self._queue
            queued = (self._next is not None) + (len(queue) if queue is not None else 0)
            if queued >= self._queue_size:
                if self._hub._metrics is not None:
                    self._hub._metrics.subscriber_cut()
                self.close(SubscriberTooSlow(self.resume_token))
                return
            if not queued:
                self._next = record  # the common case: no deque for a single record
            elif queue is None:
                self._queue = deque((record,))
            else:
                queue.append(record)
            last = self._queued[stream] = self._tail[stream] = sequence
            queued_any = True
        if queued_any:
            self._wake()

    def _passed(self, stream: str, sequence: int) -> None:
        """Live ``stream``'s records up to ``sequence`` were filtered out (or, narrowed,
        not offered): move past them, at once when nothing of it is queued."""
        self._queued[stream] = sequence
        if self._tail.get(stream, 0) <= self._delivered[stream]:
            self._delivered[stream] = sequence
            self._token = None

    def _catch_up(self) -> None:
        """Narrowed: move each live stream past what its feed offered to others."""
        for stream, last in self._queued.items():
            feed = self._feeds.get(stream)
            if feed is not None and feed.offered > last:
                self._passed(stream, feed.offered)

    def _fail_unavailable(self, reason: str) -> None:
        metadata = {"resume_token": self.resume_token}
        self.close(Unavailable("the event log is unavailable", reason=reason, metadata=metadata))

    def _release(self) -> None:
        for feed in self._feeds.values():
            self._hub._detach(feed, self)
        self._feeds.clear()
        self._next = self._queue = None
        self._tail.clear()
        entry, self._beat_entry = self._beat_entry, None
        if entry is not None:
            entry[2] = None  # the hub's heap lets go of this subscription


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Mark a finished helper's exception as seen (it was handled, or is moot)."""
    if not task.cancelled():
        task.exception()
