"""The in-process event log: the embedded default (one process) and the test double.

Same semantics as the Redis log: per-stream sequences 1, 2, 3 …, retention by
length and by age applied on append, ``oldest_available``/``last_sequence`` on every
read. Nothing survives a restart, and nothing is shared between processes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta

from cortex_core.domain.event_records import (
    MAX_SEQUENCE,
    EventEnvelope,
    EventRead,
    EventRecord,
    Relayed,
)
from cortex_core.errors import Unavailable

DEFAULT_MAX_LENGTH = 10_000
DEFAULT_MAX_AGE = timedelta(days=1)


@dataclasses.dataclass(slots=True)
class _Stream:
    records: deque[EventRecord] = dataclasses.field(default_factory=deque)
    last: int = 0
    taken: int = 0  # the last event-store sequence appended by append_once


class InMemoryEventLog:
    """An :class:`~cortex_core.ports.EventLog` held in a dict of deques.

    ``max_length`` keeps at most that many records per stream; ``max_age`` drops
    records older than ``now - max_age`` (``now`` as given to ``append``). ``None``
    disables that limit.
    """

    def __init__(
        self,
        *,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        max_age: timedelta | None = DEFAULT_MAX_AGE,
    ) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError("max_length must be at least 1")
        if max_age is not None and max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        self._max_length = max_length
        self._max_age = max_age
        self._streams: dict[str, _Stream] = {}
        # Replaced on every append; waiters hold the one that was current when they
        # looked, so a wake-up between their check and their wait is never missed.
        self._appended = asyncio.Event()
        self._closed = False

    async def append(
        self, stream: str, event_id: str, envelope: EventEnvelope, payload: bytes, now: datetime
    ) -> EventRecord:
        self._check_open()
        state = self._streams.setdefault(stream, _Stream())
        state.last += 1
        record = EventRecord(stream, state.last, event_id, now, envelope, payload)
        state.records.append(record)
        self._trim(state, now)
        self._notify()
        return record

    async def append_once(self, stored: EventRecord, *, after_gap: bool = False) -> Relayed:
        self._check_open()
        state = self._streams.setdefault(stored.stream, _Stream())
        if stored.sequence <= state.taken:
            return Relayed()
        if stored.sequence > state.taken + 1 and not after_gap:
            return Relayed(behind=state.taken)
        state.taken = stored.sequence
        record = await self.append(
            stored.stream, stored.event_id, stored.envelope, stored.payload, stored.time
        )
        return Relayed(record)

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        if not 0 <= after_sequence <= MAX_SEQUENCE:
            raise ValueError("after_sequence is out of range")
        self._check_open()
        state = self._streams.get(stream) or _Stream()
        oldest = state.records[0].sequence if state.records else state.last + 1
        records: tuple[EventRecord, ...] = ()
        if limit > 0 and after_sequence < state.last:
            # Retained sequences are contiguous, so the position is arithmetic.
            start = max(after_sequence + 1 - oldest, 0)
            records = tuple(itertools.islice(state.records, start, start + limit))
        return EventRead(records, oldest, state.last)

    async def wait(self, cursors: Mapping[str, int], max_wait: float) -> set[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while not self._closed:
            ready = {s for s, after in cursors.items() if self._last(s) > after}
            if ready:
                return ready
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._appended.wait()
            except TimeoutError:
                break
        return set()

    async def close(self) -> None:
        self._closed = True
        self._notify()

    def _last(self, stream: str) -> int:
        state = self._streams.get(stream)
        return state.last if state else 0

    def _trim(self, state: _Stream, now: datetime) -> None:
        records = state.records
        if self._max_length is not None:
            while len(records) > self._max_length:
                records.popleft()
        if self._max_age is not None:
            cutoff = now - self._max_age
            while records and records[0].time < cutoff:
                records.popleft()

    def _notify(self) -> None:
        event, self._appended = self._appended, asyncio.Event()
        event.set()

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the event log is closed", reason="EVENT_LOG_UNAVAILABLE")
