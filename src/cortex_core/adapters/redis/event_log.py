"""The shared event log on Redis Streams: what every replica reads and appends.

Layout, per event stream ``S`` (the braces are a cluster hash tag, so both keys of
a stream live in one slot and the append script may touch both)::

    <prefix>{S}        a Redis stream; entry id "<sequence>-0",
                       fields e=<event_id>  t=<time, µs since the epoch>
                              h=<EventEnvelope.pack()>  p=<payload>
    <prefix>{S}:seq    a counter: the last sequence assigned (INCR)

Appending is one Lua script (:data:`APPEND_SCRIPT`): ``INCR`` the counter, ``XADD``
with the explicit id ``<seq>-0`` and ``MAXLEN``, then drop entries older than the
age limit with ``XTRIM MINID`` (the ids are sequences, not times, so the script
looks at the ``t`` field of at most 100 of the oldest entries per append). A script
runs atomically, so replicas never collide and never leave a gap. Reads are one
``MULTI``: ``GET`` the counter, the oldest entry, and ``XRANGE`` after the cursor.
Wake-ups are ``XREAD BLOCK`` on the streams' keys.

Failures: every Redis or socket error becomes ``Unavailable(EVENT_LOG_UNAVAILABLE)``.
After an outage (a connection, socket or read-only error), calls fail fast
(without touching Redis) for a backoff that doubles up to ``backoff_cap`` and
resets on the first success; the client's
connection pool reconnects by itself. Nothing waits longer than the client's
socket timeouts, and ``XREAD BLOCK`` never asks for more than ``max_block``.
A position a client could have forged never reaches Redis: ``read`` refuses a
sequence outside 0 … ``MAX_SEQUENCE`` with ValueError, and an error *reply* from
Redis to one command (e.g. a bad stream id) is logged and raised as Unavailable
for that call only, without the process-wide backoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import redis.asyncio as redis
from redis.exceptions import ReadOnlyError, RedisError, ResponseError

from cortex_core.adapters.redis.client import redis_client
from cortex_core.domain.event_records import (
    MAX_SEQUENCE,
    EventEnvelope,
    EventRead,
    EventRecord,
    Relayed,
)
from cortex_core.errors import Unavailable

T = TypeVar("T")

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "cortex:events:"
DEFAULT_MAX_LENGTH = 10_000
DEFAULT_MAX_AGE = timedelta(days=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_APPEND_BODY = """
local seq = redis.call('INCR', KEYS[2])
local id = seq .. '-0'
local maxlen = tonumber(ARGV[4])
if maxlen > 0 and ARGV[5] == '1' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, id,
             'e', ARGV[1], 't', ARGV[3], 'h', ARGV[7], 'p', ARGV[2])
elseif maxlen > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', maxlen, id,
             'e', ARGV[1], 't', ARGV[3], 'h', ARGV[7], 'p', ARGV[2])
else
  redis.call('XADD', KEYS[1], id, 'e', ARGV[1], 't', ARGV[3], 'h', ARGV[7], 'p', ARGV[2])
end
if ARGV[6] ~= '' then
  local cutoff = tonumber(ARGV[6])
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 100)
  local keep = nil
  for _, entry in ipairs(oldest) do
    local fields = entry[2]
    local t = nil
    for i = 1, #fields, 2 do
      if fields[i] == 't' then t = tonumber(fields[i + 1]) end
    end
    if t == nil or t >= cutoff then
      keep = entry[1]
      break
    end
  end
  if keep == nil and #oldest > 0 then
    keep = (tonumber(string.match(oldest[#oldest][1], '^(%d+)')) + 1) .. '-0'
  end
  if keep ~= nil then
    redis.call('XTRIM', KEYS[1], 'MINID', keep)
  end
end
"""

APPEND_SCRIPT = _APPEND_BODY + "return seq\n"

# The relay's append: KEYS[3] holds the last event-store sequence taken; ARGV[8] is
# this event's, ARGV[9] "1" to take it after a gap (the events before were lost).
# Returns the log's sequence, 0 for a repeat, or -1 - <last taken> when behind.
APPEND_ONCE_SCRIPT = (
    """
local taken = tonumber(redis.call('GET', KEYS[3]) or '0')
local stored = tonumber(ARGV[8])
if stored <= taken then return 0 end
if stored > taken + 1 and ARGV[9] ~= '1' then return -1 - taken end
"""
    + _APPEND_BODY
    + "redis.call('SET', KEYS[3], ARGV[8])\nreturn seq\n"
)


class RedisEventLog:
    """An :class:`~cortex_core.ports.EventLog` on Redis Streams, shared by replicas.

    ``max_length`` caps each stream (``approximate_trim`` uses ``MAXLEN ~``, which is
    cheaper but may keep up to ~100 more entries); ``max_age`` drops entries older
    than ``now - max_age`` when the stream is appended to. ``None`` disables a limit.
    ``max_block`` must stay below the client's socket timeout.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_length: int | None = DEFAULT_MAX_LENGTH,
        max_age: timedelta | None = DEFAULT_MAX_AGE,
        approximate_trim: bool = True,
        max_block: float = 2.0,
        backoff_cap: float = 2.0,
        close_client: bool = False,
    ) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError("max_length must be at least 1")
        if max_age is not None and max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        self._client = client
        self._prefix = prefix
        self._max_length = max_length or 0
        self._max_age = max_age
        self._approximate = approximate_trim
        self._max_block = max_block
        self._backoff_cap = backoff_cap
        self._close_client = close_client
        self._append = client.register_script(APPEND_SCRIPT)
        self._append_once = client.register_script(APPEND_ONCE_SCRIPT)
        self._backoff = 0.0
        self._retry_at = 0.0

    @classmethod
    def from_url(cls, url: str, *, command_timeout: float = 5.0, **options: Any) -> RedisEventLog:
        """A log with its own client (:func:`~cortex_core.adapters.redis.client.redis_client`:
        a bounded pool, timeouts, one quick retry), closed by ``close``. The server
        instead shares the process's one client (see bootstrap).

        ``options`` are passed to the constructor (``prefix``, ``max_length`` …).
        """
        client = redis_client(url, timeout=command_timeout)
        options.setdefault("max_block", command_timeout / 2)
        return cls(client, close_client=True, **options)

    async def append(
        self, stream: str, event_id: str, envelope: EventEnvelope, payload: bytes, now: datetime
    ) -> EventRecord:
        keys = [self._key(stream), self._counter(stream)]
        args = self._append_args(event_id, envelope, payload, now)
        sequence = await self._call(lambda: self._append(keys=keys, args=args))
        return EventRecord(stream, int(sequence), event_id, now, envelope, payload)

    async def append_once(self, stored: EventRecord, *, after_gap: bool = False) -> Relayed:
        stream = stored.stream
        keys = [self._key(stream), self._counter(stream), self._taken(stream)]
        args = self._append_args(stored.event_id, stored.envelope, stored.payload, stored.time)
        args += [stored.sequence, "1" if after_gap else "0"]
        answer = int(await self._call(lambda: self._append_once(keys=keys, args=args)))
        if answer == 0:
            return Relayed()
        if answer < 0:
            return Relayed(behind=-1 - answer)
        return Relayed(dataclasses.replace(stored, sequence=answer))

    def _append_args(
        self, event_id: str, envelope: EventEnvelope, payload: bytes, now: datetime
    ) -> list[bytes | str | int]:
        cutoff = "" if self._max_age is None else str(_micros(now - self._max_age))
        return [
            event_id,
            payload,
            _micros(now),
            self._max_length,
            "1" if self._approximate else "0",
            cutoff,
            envelope.pack(),
        ]

    async def read(self, stream: str, after_sequence: int, limit: int) -> EventRead:
        if not 0 <= after_sequence <= MAX_SEQUENCE:
            raise ValueError("after_sequence is out of range")
        key = self._key(stream)

        async def transaction() -> list[Any]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.get(self._counter(stream))
                pipe.xrange(key, "-", "+", count=1)
                if limit > 0:
                    pipe.xrange(key, f"{after_sequence + 1}-0", "+", count=limit)
                return await pipe.execute()

        replies = await self._call(transaction)
        last = int(replies[0] or 0)
        oldest = _sequence(replies[1][0][0]) if replies[1] else last + 1
        records = tuple(_record(stream, e) for e in replies[2]) if limit > 0 else ()
        return EventRead(records, oldest, last)

    async def wait(self, cursors: Mapping[str, int], max_wait: float) -> set[str]:
        if not cursors:
            return set()
        by_key = {self._key(s).encode(): s for s in cursors}
        ids: dict[Any, Any] = {self._key(s): f"{after}-0" for s, after in cursors.items()}
        block = max(1, int(min(max_wait, self._max_block) * 1000))
        replies: Any = await self._call(lambda: self._client.xread(ids, count=1, block=block))
        pairs = replies.items() if isinstance(replies, dict) else (replies or [])  # RESP3 or 2
        return {by_key[_bytes(key)] for key, entries in pairs if entries}

    async def close(self) -> None:
        if self._close_client:
            await self._client.aclose()

    def _key(self, stream: str) -> str:
        return f"{self._prefix}{{{stream}}}"

    def _counter(self, stream: str) -> str:
        return f"{self._prefix}{{{stream}}}:seq"

    def _taken(self, stream: str) -> str:
        return f"{self._prefix}{{{stream}}}:stored"

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation; map failures to Unavailable and back off after them."""
        if time.monotonic() < self._retry_at:
            raise _unavailable()
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            result = await operation()
        except ResponseError as exc:
            _reraise_swallowed_cancel(task, cancels)
            if isinstance(exc, ReadOnlyError):  # a replica after failover: an outage
                raise self._outage(exc) from exc
            # Redis refused this one command (say, a bad id): the server is fine.
            logger.error("the event log refused a command: %s", exc)
            raise _unavailable() from exc
        except (RedisError, OSError) as exc:
            _reraise_swallowed_cancel(task, cancels)
            raise self._outage(exc) from exc
        _reraise_swallowed_cancel(task, cancels)
        if self._backoff:
            logger.info("event log available again")
        self._backoff = 0.0
        self._retry_at = 0.0
        return result

    def _outage(self, exc: BaseException) -> Unavailable:
        """Start or lengthen the fail-fast backoff."""
        if not self._backoff:
            logger.warning("event log unavailable: %s", exc.__class__.__name__)
        self._backoff = min(max(self._backoff * 2, 0.05), self._backoff_cap)
        self._retry_at = time.monotonic() + self._backoff
        return _unavailable()


def _reraise_swallowed_cancel(task: asyncio.Task[Any] | None, before: int) -> None:
    """redis-py's pipeline sometimes eats a CancelledError (seen with redis 8.1); a
    cancellation requested during the call must still end the caller."""
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


def _unavailable() -> Unavailable:
    return Unavailable("the event log is unavailable", reason="EVENT_LOG_UNAVAILABLE")


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _sequence(entry_id: bytes | str) -> int:
    return int(_bytes(entry_id).split(b"-", 1)[0])


def _record(stream: str, entry: tuple[bytes, dict[bytes, bytes]]) -> EventRecord:
    entry_id, fields = entry
    return EventRecord(
        stream=stream,
        sequence=_sequence(entry_id),
        event_id=fields[b"e"].decode(),
        time=_EPOCH + int(fields[b"t"]) * _MICROSECOND,
        envelope=EventEnvelope.unpack(fields[b"h"].decode()),
        payload=fields[b"p"],
    )
