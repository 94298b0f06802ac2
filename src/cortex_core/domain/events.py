"""Event log values: records, read results, subscription items and resume tokens.

An *event stream* is a named, append-only log (``"ws:<workspace_id>"``,
``"user:<user_id>"``; the caller chooses the names). Each record gets a per-stream
``sequence`` 1, 2, 3 … assigned by the log at append time. Payloads are opaque
bytes: the API layer stores a serialized proto there, nothing below it looks inside.

A :class:`ResumeToken` is the client's bookmark: the last sequence delivered per
stream. It is opaque to clients, valid on any replica, and encoded as
``"v1." + urlsafe_base64(compact JSON {stream: sequence})`` without padding.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

from cortex_core.errors import FieldViolation, InvalidArgument

TOKEN_PREFIX = "v1."
MAX_TOKEN_LENGTH = 64 * 1024
MAX_TOKEN_STREAMS = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored event. ``sequence`` is unique and gap-free per ``stream``."""

    stream: str
    sequence: int
    event_id: str
    time: datetime
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class EventRead:
    """The answer to ``EventLog.read``.

    ``records`` have ``sequence > after`` in ascending order. ``oldest_available``
    is the lowest sequence still retained, or ``last_sequence + 1`` when nothing is
    retained; a reader whose ``after + 1 < oldest_available`` has lost events to
    retention. ``last_sequence`` is the highest sequence ever assigned (0: none).
    """

    records: tuple[EventRecord, ...]
    oldest_available: int
    last_sequence: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayUnavailable:
    """Events ``requested_after + 1 … oldest_available - 1`` of ``stream`` are gone.

    A subscription yields this before any record of the stream it concerns; the
    records that follow start at ``oldest_available``. It also appears when the
    requested position is beyond the log's last sequence (the log was reset).
    """

    stream: str
    requested_after: int
    oldest_available: int


@dataclasses.dataclass(frozen=True, slots=True)
class Heartbeat:
    """Nothing happened for a while; ``resume_token`` is the current position."""

    resume_token: str


SubscriptionItem = EventRecord | ReplayUnavailable | Heartbeat


@dataclasses.dataclass(frozen=True, slots=True)
class ResumeToken:
    """The last delivered sequence per stream, as an opaque url-safe string."""

    positions: Mapping[str, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", MappingProxyType(dict(self.positions)))

    def encode(self) -> str:
        return encode_positions(self.positions)

    @classmethod
    def decode(cls, token: str) -> ResumeToken:
        """Parse a token made by :meth:`encode`.

        Raises InvalidArgument (reason ``INVALID_RESUME_TOKEN``, a violation on
        ``resume_token``) for anything else, including an empty string: callers
        treat "no token" before calling this.
        """
        positions = _parse(token)
        if positions is None:
            raise InvalidArgument(
                "resume_token is not valid",
                [
                    FieldViolation(
                        "resume_token",
                        "use the resume_token of a previous event or heartbeat",
                        reason="INVALID_RESUME_TOKEN",
                    )
                ],
                reason="INVALID_RESUME_TOKEN",
            )
        return cls(positions)


def encode_positions(positions: Mapping[str, int]) -> str:
    """``ResumeToken(positions).encode()`` without building the token: the same string
    as ``json.dumps(dict(sorted(positions.items())), separators=(",", ":"))`` encoded,
    with each stream's JSON key made once per process."""
    raw = "{" + ",".join([_json_key(s) + str(n) for s, n in sorted(positions.items())]) + "}"
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@functools.lru_cache(maxsize=4096)
def _json_key(stream: str) -> str:
    return json.dumps(stream) + ":"


def _parse(token: str) -> dict[str, int] | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    body = token[len(TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or len(value) > MAX_TOKEN_STREAMS:
        return None
    for stream, sequence in value.items():
        if not stream or type(sequence) is not int or sequence < 0:
            return None
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event waiting in the outbox for the event log to come back."""

    outbox_id: int
    stream: str
    event_id: str
    payload: bytes
    time: datetime
