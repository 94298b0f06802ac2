"""Per-caller limits: request rates per user and per workspace, open streams per user.

Rates use the ``limits`` library's async sliding-window-counter strategy over one
storage that bootstrap builds: ``async+memory://`` in process, or
``async+redis://`` over the process's one Redis connection pool when
``CORTEX_REDIS_URL`` is set (shared by every replica). A call over a rate is
refused with ``RESOURCE_EXHAUSTED``, reason ``RATE_LIMITED`` and a ``RetryInfo``
saying when the window lets one more in.

Open streams (SubscribeEvents, SendMessage, WatchTask) are counted per user in
this process only: :meth:`CallLimiter.open_stream` increments, the returned
release decrements, and the interceptor calls it in ``finally``. A crashed
process takes its counts with it, so nothing can leak; the cost is that with N
replicas a user may hold N times the cap. Over the cap: ``RESOURCE_EXHAUSTED``,
reason ``TOO_MANY_STREAMS``, ``RetryInfo``.

In process, counters expire through :class:`SweptMemoryStorage`: ``limits``'
``MemoryStorage`` starts a sweep task of its own from every call and never reads
its outcome; this subclass leaves that out, and :meth:`CallLimiter.sweep` (a
supervised loop, ``limits-sweeper``) drops expired counters instead. Redis
expires its keys itself.

When the storage fails (Redis down or slow), the call is let through and the
failure is logged at most once per ``_OUTAGE_LOG_INTERVAL`` seconds: these limits
protect capacity, and refusing every caller during an outage would turn a Redis
hiccup into a full outage (the login throttle, which guards passwords, fails
closed instead; see docs/security.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from cortex_core import errors

log = logging.getLogger(__name__)

#: Methods whose calls hold a stream open (counted against the per-user cap).
STREAM_METHODS = frozenset(
    {
        "/cortex.events.v1.EventService/SubscribeEvents",
        "/cortex.context.v1.ConversationService/SendMessage",
        "/cortex.experts.v1.ExpertService/WatchTask",
    }
)
#: How long a caller over the stream cap is told to wait.
RETRY_AFTER_STREAMS = 5.0
_MIN_RETRY_AFTER = 0.1
_OUTAGE_LOG_INTERVAL = 30.0
#: After a storage failure, calls skip the storage (and pass) for this long, so an
#: outage does not add a Redis timeout to every call.
_OUTAGE_SKIP = 2.0
_WORKSPACE_FIELDS = ("parent", "name", "workspace")
_WORKSPACE_PREFIX = "workspaces/"


class SweptMemoryStorage(MemoryStorage):
    """``limits``' in-process storage whose expired counters are dropped by
    :meth:`sweep`, called by a supervised loop, instead of by the task
    ``MemoryStorage`` creates from every ``incr`` (its failure would go unread,
    and each pass walks every key). Pinned to ``limits`` 5.x, whose hook this
    overrides: reads never count an expired key either way (``get`` checks the
    expiry), so sweeping only returns memory."""

    async def _MemoryStorage__schedule_expiry(self) -> None:  # the library's private hook
        return None

    async def sweep(self) -> int:
        """Drop every expired counter; how many were dropped. Holds no lock across
        an await: the dicts are only touched from the event loop."""
        now = time.time()
        expired = [key for key, expiry in self.expirations.items() if expiry <= now]
        for key in expired:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            lock = self.locks.get(key)
            if lock is not None and not lock.locked():
                self.locks.pop(key, None)
        return len(expired)


def rate(raw: str) -> RateLimitItem:
    """A ``limits`` rate string (``600/minute``, ``10 per second``); ``ValueError``."""
    try:
        return parse(raw)
    except ValueError:
        raise ValueError('expected a rate such as "600/minute" or "20/second"') from None


def workspace_of(request: Any, known: dict[type, tuple[str, ...]]) -> str:
    """The workspace id a request names in its top-level ``parent``, ``name`` or
    ``workspace`` field (``workspaces/{w}/...``), or ``""``. Which of those fields
    a message type has is looked up once per type and kept in ``known``."""
    fields = known.get(type(request))
    if fields is None:
        descriptor = getattr(request, "DESCRIPTOR", None)
        names = descriptor.fields_by_name if descriptor is not None else {}
        fields = known[type(request)] = tuple(
            name
            for name in _WORKSPACE_FIELDS
            if name in names
            and names[name].type == names[name].TYPE_STRING
            and not names[name].is_repeated
        )
    for name in fields:
        value: str = getattr(request, name)
        if value.startswith(_WORKSPACE_PREFIX):
            return value[len(_WORKSPACE_PREFIX) :].partition("/")[0]
    return ""


def _as_tuple(
    kinds: type[Exception] | tuple[type[Exception], ...],
) -> tuple[type[Exception], ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


class CallLimiter:
    """Admits authenticated calls against the per-user and per-workspace rates and
    the per-user stream cap (see the module docstring)."""

    def __init__(
        self,
        storage: Storage,
        *,
        user_rate: RateLimitItem,
        workspace_rate: RateLimitItem,
        max_streams_per_user: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._storage = storage
        self._failures: tuple[type[Exception], ...] = (
            *_as_tuple(storage.base_exceptions),
            OSError,
            TimeoutError,
        )
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._user_rate = user_rate
        self._workspace_rate = workspace_rate
        self._max_streams = max_streams_per_user
        self._streams: dict[str, int] = {}
        self._workspace_fields: dict[type, tuple[str, ...]] = {}
        self._clock = clock
        self._last_outage_log = float("-inf")
        self._skip_until = float("-inf")

    async def admit(self, user_id: str, request: Any) -> None:
        """Count one call of ``user_id``; raise ``ResourceExhausted`` (RATE_LIMITED,
        with ``retry_after``) when the user's or the request's workspace's rate is
        spent. A storage failure lets the call through (logged)."""
        await self._hit(self._user_rate, "user", user_id)
        workspace = workspace_of(request, self._workspace_fields)
        if workspace:
            await self._hit(self._workspace_rate, "workspace", workspace)

    def open_stream(self, user_id: str) -> Callable[[], None]:
        """Count one open stream of ``user_id`` and return its release (call it
        exactly once, in ``finally``); raise ``ResourceExhausted``
        (TOO_MANY_STREAMS, with ``retry_after``) when the user is at the cap."""
        held = self._streams.get(user_id, 0)
        if held >= self._max_streams:
            raise errors.ResourceExhausted(
                "too many open streams for this user; close one and retry",
                reason="TOO_MANY_STREAMS",
                retry_after=RETRY_AFTER_STREAMS,
            )
        self._streams[user_id] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._streams.get(user_id, 1) - 1
            if left > 0:
                self._streams[user_id] = left
            else:
                self._streams.pop(user_id, None)

        return release

    def open_streams(self, user_id: str) -> int:
        """Streams of ``user_id`` open in this process."""
        return self._streams.get(user_id, 0)

    async def sweep(self) -> None:
        """One pass of the ``limits-sweeper`` loop: drop expired in-process counters
        (nothing to do over Redis)."""
        if isinstance(self._storage, SweptMemoryStorage):
            await self._storage.sweep()

    async def _hit(self, item: RateLimitItem, kind: str, key: str) -> None:
        if self._clock() < self._skip_until:
            return
        try:
            if await self._limiter.hit(item, kind, key):
                return
            stats = await self._limiter.get_window_stats(item, kind, key)
        except self._failures as exc:
            self._outage(exc)
            return
        retry_after = max(stats.reset_time - time.time(), _MIN_RETRY_AFTER)
        raise errors.ResourceExhausted(
            f"too many requests for this {kind}; retry later",
            reason="RATE_LIMITED",
            retry_after=round(retry_after, 3),
        )

    def _outage(self, exc: Exception) -> None:
        now = self._clock()
        self._skip_until = now + _OUTAGE_SKIP
        if now - self._last_outage_log >= _OUTAGE_LOG_INTERVAL:
            self._last_outage_log = now
            log.warning("rate limits: storage failed, letting calls through: %r", exc)
