"""Admission of replies: a fixed number stream at once; the rest are refused with
a retry delay that spreads their retries over the time slots take to free up.

A refusal told "retry in 1 s" sends every refused caller of a burst back at the
same instant, when only the few slots freed meanwhile can take them: most are
refused again, second after second (a burst of 1,000 sends over 256 slots made
12,000 refusals, each a whole RPC, and they cost the server more than the
replies did). So the refusals form a virtual line instead: each refused caller
is given the time at which, at the rate slots have been freeing, a slot should
be free for it, and the next refused caller the time after that. Nothing waits
on the server (the line is a number), and a caller that follows its RetryInfo
is usually admitted on its first retry.

The rate is the number of slots over the mean time a reply has kept one (an
exponentially weighted mean of the recent ones, ``initial_hold`` before any
finished). A delay is never shorter than ``min_delay`` nor longer than
``max_delay``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cortex_core import errors

MIN_RETRY_DELAY = 0.25  # seconds: a caller in front of the line does not poll
MAX_RETRY_DELAY = 30.0
_WEIGHT = 0.1  # of the latest reply in the mean hold time


class ReplyAdmission:
    """At most ``limit`` admitted at once; see the module docstring.

    Not thread-safe; used from one event loop.
    """

    def __init__(
        self,
        limit: int,
        *,
        initial_hold: float = 1.0,
        min_delay: float = MIN_RETRY_DELAY,
        max_delay: float = MAX_RETRY_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit = limit
        self._hold = initial_hold
        self._min = min_delay
        self._max = max_delay
        self._clock = clock
        self._line_ends = 0.0  # when the last refused caller was told to come back
        self.active = 0

    def enter(self) -> float:
        """Take a slot and return the time taken (give it to :meth:`leave`).

        Raises ResourceExhausted (TOO_MANY_ACTIVE_REPLIES) with ``retry_after``
        when every slot is taken.
        """
        now = self._clock()
        if self.active >= self._limit:
            # One more place in the line: the gap between two slots freeing.
            turn = max(self._line_ends, now) + self._hold / self._limit
            self._line_ends = turn
            raise errors.ResourceExhausted(
                "this server is streaming as many replies as it may; retry shortly",
                reason="TOO_MANY_ACTIVE_REPLIES",
                retry_after=round(min(max(turn - now, self._min), self._max), 3),
            )
        self.active += 1
        return now

    def leave(self, entered: float) -> None:
        """Give back the slot taken at ``entered``."""
        self.active -= 1
        self._hold += _WEIGHT * (self._clock() - entered - self._hold)
