"""The one circuit breaker: closed, open, half-open.

Used per LLM provider by the fallback chain and per Redis adapter (the cache)
in front of Redis. ``failure_threshold`` failed attempts in a row open the
circuit; after ``reset_after`` seconds it is half-open and lets one probe
through at a time (:meth:`CircuitBreaker.try_acquire`); the probe's success
closes it, its failure re-opens it, for twice as long when ``max_reset_after``
allows (a failing backend is asked less and less often).

The breaker decides; it does not log and does not call anything. Its callers log
the transitions that :meth:`record_failure` and :meth:`record_success` report.
Not thread-safe: every method runs on the event loop without awaiting.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable


@dataclasses.dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_threshold: int = 5
    reset_after: float = 30.0
    #: The longest wait after repeated failed probes (None: always ``reset_after``).
    max_reset_after: float | None = None


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts failed attempts in a row; see the module docstring."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._policy = policy or BreakerPolicy()
        self._monotonic = monotonic
        self._failures = 0
        self._opened_at: float | None = None
        self._reset_after = self._policy.reset_after
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._monotonic() - self._opened_at >= self._reset_after:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    @property
    def failures(self) -> int:
        """Failed attempts in a row."""
        return self._failures

    @property
    def reset_after(self) -> float:
        """How long the circuit stays open (now, or the next time it opens)."""
        return self._reset_after

    def time_to_probe(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._reset_after - self._monotonic())

    def try_acquire(self) -> bool:
        """May an attempt go through now? In half-open, one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> bool:
        """The attempt succeeded; True when that closed an open circuit."""
        recovered = self._opened_at is not None
        self._failures = 0
        self._opened_at = None
        self._reset_after = self._policy.reset_after
        self._probing = False
        return recovered

    def record_failure(self) -> bool:
        """The attempt failed; True when that opened the circuit (a closed one reaching
        the threshold, or a failed probe)."""
        self._failures += 1
        was_probing, self._probing = self._probing, False
        if not was_probing and self._failures < self._policy.failure_threshold:
            return False
        opened = was_probing or self._opened_at is None
        maximum = self._policy.max_reset_after
        if was_probing and maximum is not None:
            self._reset_after = min(self._reset_after * 2, maximum)
        self._opened_at = self._monotonic()  # late failures keep it open longer
        return opened

    def release(self) -> None:
        """The attempt ended without a verdict (cancelled, or the request's own fault)."""
        self._probing = False
