"""How long a resumable stream waits before reconnecting."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import grpc
from cortex_client.errors import CortexError

#: Failures the server reported (they carry its ``google.rpc.Status`` with an ErrorInfo
#: reason) after which reconnecting can succeed: the server drains or restarts, a stream
#: cap or rate limit clears, a slow subscriber resumes from its last token, or the access
#: token expired mid-stream (the next open refreshes it through ``TokenAuth``).
RETRYABLE: dict[grpc.StatusCode, frozenset[str] | None] = {
    grpc.StatusCode.UNAVAILABLE: None,  # every reason
    grpc.StatusCode.RESOURCE_EXHAUSTED: frozenset(
        {"SUBSCRIBER_TOO_SLOW", "TOO_MANY_STREAMS", "RATE_LIMITED", "TOO_MANY_REQUESTS"}
    ),
    grpc.StatusCode.UNAUTHENTICATED: frozenset({"TOKEN_EXPIRED"}),
}

#: Codes of a failure that came from the transport, not from a Cortex server (no ErrorInfo):
#: a refused or dropped connection (UNAVAILABLE), and a stream a proxy reset when the
#: replica behind it died (Envoy sends RST_STREAM INTERNAL_ERROR: grpc reports INTERNAL
#: "Received RST_STREAM with error code 2"; other resets read UNKNOWN). The helpers set no
#: per-attempt deadline, so DEADLINE_EXCEEDED is the caller's own and is not here.
TRANSPORT_FAILURES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)


def retryable(error: CortexError) -> bool:
    """True when reopening a resumable stream after ``error`` can succeed.

    The rule: a failure without an ErrorInfo reason is the transport's, and is resumed
    when its code is in ``TRANSPORT_FAILURES``; a failure with one is the server's, and is
    resumed only when ``RETRYABLE`` lists its code and reason. So a stream cut by a killed
    replica behind Envoy resumes, and INVALID_ARGUMENT, PERMISSION_DENIED, NOT_FOUND,
    INVALID_RESUME_TOKEN or a server's own INTERNAL are raised.
    """
    if not error.reason:
        return error.code in TRANSPORT_FAILURES
    if error.code not in RETRYABLE:
        return False
    reasons = RETRYABLE[error.code]
    return reasons is None or error.reason in reasons


@dataclass
class Backoff:
    """Exponential backoff with full jitter, reset after each healthy stretch.

    ``delay(error)`` honours the server's RetryInfo when there is one (never waiting
    less than it says) and otherwise grows ``initial`` by ``factor`` up to ``maximum``.
    ``attempts`` bounds consecutive failures (None: reconnect forever).
    """

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    attempts: int | None = 8
    _failures: int = field(default=0, init=False)
    _random: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def reset(self) -> None:
        self._failures = 0

    def exhausted(self) -> bool:
        return self.attempts is not None and self._failures >= self.attempts

    def delay(self, error: CortexError | None = None) -> float:
        """The wait before the next attempt; counts a failure."""
        ceiling = min(self.maximum, self.initial * self.factor**self._failures)
        self._failures += 1
        jittered = self._random.uniform(0, ceiling)
        if error is not None and error.retry_delay is not None:
            return max(error.retry_delay, jittered)
        return jittered
