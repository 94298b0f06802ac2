"""Every committed change has exactly one event: written in its transaction, relayed once.

**In the transaction.** A use case hands its changes to the event bus together
with its unit of work (``EventBus.commit``); :meth:`EventRelay.stage` turns each
into an event (a new event id, the change's envelope, the payload from
``encode``) and writes it with ``uow.outbox.append`` right before the commit.
The store numbers events per stream in commit order (adapters/sql/outbox.py), so
a change that commits has its event and one that rolls back has none, whatever
happens to the process afterwards.

**To the log.** Where the event log *is* the store (no Redis:
adapters/sql/event_log.py) nothing has to move: :meth:`committed` only hands the
records to this process's subscribers (``EventHub.published``) and the
supervised loop applies retention. With an external log (Redis) the store is
its outbox:

* the fast path: right after the commit, :meth:`committed` appends the records
  with ``RelayedLog.append_once`` and notes them as acknowledged;
* the relay loop (:meth:`drain_and_wait`, the ``event-relay`` loop of the
  supervisor, on every replica) writes those acknowledgements (the rows go), then
  appends whatever is still not acknowledged, by stream in stored order:
  events of a process that died before its append, events kept while the log was
  down, events of another replica that died.

Why this loses and reorders nothing, and appends nothing twice: the log takes a
stored event only if it is the next of its stream (``append_once`` keeps the last
stored sequence it took, per stream, in the same atomic step as the append), so a
fast path that runs ahead of an earlier commit, or two replicas relaying the same
rows, can neither reorder nor repeat: the late or second attempt is told
"behind" (the relay loop, which reads the rows in order, takes it) or "already
taken" (dropped). A crash between an append and its acknowledgement leaves the
row, and its next append is "already taken". A stream's first unacknowledged row
that the log reports behind means the log lost acknowledged events (Redis
restarted without its data): it is appended after the gap.

Events that report no stored change (``Change.DURABLE`` false: reply text in
progress) are appended directly (:meth:`publish`): they have nothing to be
consistent with, and one lost with its process is lost with its reply. Every
stored change is written in its own transaction: there is no
publish-after-commit path left (``EventBus.publish`` refuses a durable change;
docs/events.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from cortex_core import errors
from cortex_core.domain.event_records import EventRecord, NewEvent, Relayed
from cortex_core.domain.events import Change
from cortex_core.domain.identity import new_id
from cortex_core.ports import EventLog, Metrics, RelayedLog, UnitOfWork, UnitOfWorkFactory
from cortex_core.services.event_hub import EventHub

log = logging.getLogger(__name__)

Encode = Callable[[Change, str], bytes]
"""The wire payload of a change, given its event id (pure: no I/O)."""
BATCH = 200
FAST_PATH_PAUSES = (0.0, 0.002, 0.005, 0.01, 0.02)
TRIM_INTERVAL = 30.0


class EventRelay:
    """``log`` is what the hub reads. ``external`` is True when ``log`` is not the
    event store itself (Redis; then it must be a :class:`RelayedLog`); ``trim``
    applies the store's retention when it is the log."""

    def __init__(
        self,
        *,
        log: EventLog,
        hub: EventHub,
        uow: UnitOfWorkFactory,
        encode: Encode,
        external: bool = True,
        trim: Callable[[datetime], Awaitable[int]] | None = None,
        retry_interval: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._log = log
        self._relayed: RelayedLog | None = log if external else None  # type: ignore[assignment]
        self._hub = hub
        self._uow = uow
        self._encode = encode
        self._trim = trim
        self._trimmed_at = 0.0
        self._retry_interval = retry_interval
        self._metrics = metrics
        self._backlog = external  # until the first drain proves nothing is pending
        self._acked: dict[str, int] = {}
        self._wake = asyncio.Event()

    @property
    def backlog(self) -> bool:
        """True while committed events wait for the relay loop (the log was
        unavailable, or a drain has not run since the start)."""
        return self._backlog

    async def stage(self, uow: UnitOfWork, changes: Sequence[Change]) -> list[EventRecord]:
        """Write the changes' events in ``uow`` (call it right before its commit)."""
        events = []
        for change in changes:
            event_id = new_id()
            events.append(
                NewEvent(
                    change.stream,
                    event_id,
                    change.time,
                    change.envelope,
                    self._encode(change, event_id),
                )
            )
        return await uow.outbox.append(events)

    async def committed(self, records: Sequence[EventRecord]) -> None:
        """The fast path, after the commit of ``records``: never raises for the log's
        outage (the relay loop takes over)."""
        relayed = self._relayed
        if relayed is None:
            for record in records:
                self._hub.published(record)
            return
        if self._backlog:
            self._wake.set()
            return
        behind: set[str] = set()
        for record in records:
            if record.stream in behind:
                continue
            try:
                result = await self._append_soon(relayed, record)
            except errors.Unavailable:
                log.warning("event log unavailable; the relay keeps committed events")
                self._backlog = True
                self._wake.set()
                return
            if result.behind is not None:
                behind.add(record.stream)  # an earlier commit is still not appended
                self._wake.set()
                continue
            if result.record is not None:
                self._hub.published(result.record)
            self._ack(record)

    async def _append_soon(self, relayed: RelayedLog, record: EventRecord) -> Relayed:
        """``append_once``, tried again a few times within milliseconds while the log
        is behind: the commit before this one (usually of this very process, whose
        fast path is a moment behind) lands meanwhile, and the relay loop is only
        needed for events whose committer died or was cut off."""
        result = await relayed.append_once(record)
        for pause in FAST_PATH_PAUSES:
            if result.behind is None:
                break
            await asyncio.sleep(pause)
            result = await relayed.append_once(record)
        return result

    async def publish(self, changes: Sequence[Change]) -> None:
        """For events that report no stored change (``EventBus.publish``, which
        refuses durable ones: their events are written in their transaction,
        :meth:`stage`): appended directly (dropped while the log is down)."""
        for change in changes:
            if self._backlog and self._relayed is not None:
                # The log was found down and the loop has not caught up: drop it without
                # a call (each would push the log adapter's fail-fast window on).
                log.debug("event log unavailable; dropped a %s event", change.KIND.value)
                continue
            event_id = new_id()
            try:
                record = await self._log.append(
                    change.stream,
                    event_id,
                    change.envelope,
                    self._encode(change, event_id),
                    change.time,
                )
            except errors.Unavailable:
                log.warning("event log unavailable; dropped a %s event", change.KIND.value)
                continue
            self._hub.published(record)

    async def run(self) -> None:
        """Relay until cancelled; failures are logged and retried (for callers
        without a supervisor)."""
        while True:
            try:
                await self.drain_and_wait()
            except errors.Unavailable:
                await asyncio.sleep(self._retry_interval)
            except Exception:
                log.exception("relaying committed events failed; retrying")
                await asyncio.sleep(self._retry_interval)

    async def drain_once(self) -> int:
        """One pass: write the fast path's acknowledgements, then append every
        event not acknowledged yet, by stream in stored order; leave the backlog
        mode when nothing is left. Returns how many events it appended (repeats
        the log refused included). Raises ``Unavailable`` when the log or the
        database cannot be reached (what was moved stays moved); call again."""
        if self._relayed is None:
            await self._apply_retention()
            return 0
        await self._flush_acks()
        moved = 0
        while True:
            async with self._uow() as uow:
                pending = await uow.outbox.pending(BATCH)
            if not pending:
                if self._backlog and moved:
                    log.info("event log caught up (%d events relayed)", moved)
                self._backlog = False
                self._count(0)
                return moved
            try:
                done = await self._relay_batch(pending)
            except errors.Unavailable:
                self._count(len(pending))  # at least this many wait for the log
                raise
            await self._flush_acks()
            if not done:
                return moved  # nothing could move (a stream is behind): retry later
            moved += done

    async def drain_and_wait(self) -> None:
        """The supervised step: :meth:`drain_once`, then wait for a wake-up (a fast
        path that could not append) or ``retry_interval``, after which pending
        rows of other replicas are looked for again. Raises what ``drain_once``
        raises; the supervisor backs off and calls again."""
        await self.drain_once()
        self._wake.clear()
        try:
            async with asyncio.timeout(self._retry_interval):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def _relay_batch(self, pending: Sequence[EventRecord]) -> int:
        relayed = self._relayed
        assert relayed is not None
        moved = 0
        seen: set[str] = set()
        stuck: set[str] = set()
        for record in pending:
            if record.stream in stuck:
                continue
            first = record.stream not in seen
            seen.add(record.stream)
            result = await relayed.append_once(record)
            if result.behind is not None:
                if not first:
                    stuck.add(record.stream)
                    continue
                # Every stored event before this one was acknowledged: the log lost them.
                log.warning(
                    "event log lost %s after stored event %d; appending after the gap",
                    record.stream,
                    result.behind,
                )
                result = await relayed.append_once(record, after_gap=True)
            if result.record is not None:
                self._hub.published(result.record)
            self._ack(record)
            moved += 1
        return moved

    def _ack(self, record: EventRecord) -> None:
        if self._acked.get(record.stream, 0) < record.sequence:
            self._acked[record.stream] = record.sequence

    async def _flush_acks(self) -> None:
        if not self._acked:
            return
        acked, self._acked = self._acked, {}
        try:
            async with self._uow() as uow:
                await uow.outbox.acknowledge(acked)
                await uow.commit()
        except BaseException:
            for stream, sequence in acked.items():  # written next time
                if self._acked.get(stream, 0) < sequence:
                    self._acked[stream] = sequence
            raise

    async def _apply_retention(self) -> None:
        if self._trim is None or time.monotonic() - self._trimmed_at < TRIM_INTERVAL:
            return
        self._trimmed_at = time.monotonic()
        await self._trim(datetime.now(UTC))

    def _count(self, pending: int) -> None:
        if self._metrics is not None:
            self._metrics.outbox_backlog(pending)
