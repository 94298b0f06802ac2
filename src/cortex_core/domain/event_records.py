"""Event log values: records, read results, subscription items and resume tokens.

An *event stream* is a named, append-only log (``"ws:<workspace_id>"``,
``"user:<user_id>"``; the caller chooses the names). Each record gets a per-stream
``sequence`` 1, 2, 3 … assigned by the log at append time. Each record carries an
:class:`EventEnvelope`, the few typed facts the services need to filter and
authorize (kind, workspace, conversation, subject user and session), and an opaque
``payload`` (the wire-encoded event; nothing below the API looks inside it).

A :class:`ResumeToken` is the client's bookmark: the last sequence delivered per
stream. It is opaque to clients, valid on any replica, and encoded as
``"v1." + urlsafe_base64(compact JSON {stream: sequence})`` without padding.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import json
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType

from cortex_core.errors import FieldViolation, InvalidArgument

TOKEN_PREFIX = "v1."
MAX_TOKEN_LENGTH = 64 * 1024
MAX_TOKEN_STREAMS = 1024
MAX_SEQUENCE = 2**63 - 1  # the contract's int64 ``sequence``; no log ever gets there


class EventKind(enum.Enum):
    """What an event says happened; the value names the contract's payload field."""

    WORKSPACE_CREATED = "workspace_created"
    WORKSPACE_UPDATED = "workspace_updated"
    WORKSPACE_DELETED = "workspace_deleted"
    MEMBER_ADDED = "member_added"
    MEMBER_REMOVED = "member_removed"
    CONVERSATION_CREATED = "conversation_created"
    CONVERSATION_UPDATED = "conversation_updated"
    CONVERSATION_DELETED = "conversation_deleted"
    MESSAGE_CREATED = "message_created"
    SESSION_CREATED = "session_created"
    SESSION_REVOKED = "session_revoked"
    PASSWORD_CHANGED = "password_changed"
    REPLY_STARTED = "reply_started"
    REPLY_DELTA = "reply_delta"
    REPLY_COMPLETED = "reply_completed"
    MEMORY_CREATED = "memory_created"
    MEMORY_DELETED = "memory_deleted"
    TASK_STATE_CHANGED = "task_state_changed"
    TOOL_CALL_REQUESTED = "tool_call_requested"
    TOOL_CALL_COMPLETED = "tool_call_completed"


_SEPARATOR = "\x1f"  # never in an id, a kind or a stream name


@dataclasses.dataclass(frozen=True, slots=True)
class EventEnvelope:
    """The typed facts stored with an event, read without decoding its payload.

    ``workspace_id``/``conversation_id``: what the event is about ("" for none).
    ``user_id``/``session_id``: its subject: the member removed or the user and
    session of a security event ("" for none).
    """

    kind: EventKind
    workspace_id: str = ""
    conversation_id: str = ""
    user_id: str = ""
    session_id: str = ""

    def pack(self) -> str:
        """A compact text form for storage; :meth:`unpack` reverses it."""
        return _SEPARATOR.join(
            (
                self.kind.value,
                self.workspace_id,
                self.conversation_id,
                self.user_id,
                self.session_id,
            )
        )

    @classmethod
    def unpack(cls, text: str) -> EventEnvelope:
        """Raises ValueError for anything :meth:`pack` did not make."""
        kind, workspace_id, conversation_id, user_id, session_id = text.split(_SEPARATOR)
        return _unpacked(kind, workspace_id, conversation_id, user_id, session_id)


@functools.lru_cache(maxsize=4096)
def _unpacked(*fields: str) -> EventEnvelope:
    """Records of one conversation share one envelope object (they are read often)."""
    kind, workspace_id, conversation_id, user_id, session_id = fields
    return EventEnvelope(EventKind(kind), workspace_id, conversation_id, user_id, session_id)


@dataclasses.dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored event. ``sequence`` is unique and gap-free per ``stream``."""

    stream: str
    sequence: int
    event_id: str
    time: datetime
    envelope: EventEnvelope
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
        ``resume_token``) for anything else, including an empty string (callers
        treat "no token" before calling this), a sequence outside 0 … ``MAX_SEQUENCE``
        and JSON nested too deeply to parse.
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
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None  # RecursionError: deeply nested arrays or objects
    if not isinstance(value, dict) or len(value) > MAX_TOKEN_STREAMS:
        return None
    for stream, sequence in value.items():
        if not stream or type(sequence) is not int or not 0 <= sequence <= MAX_SEQUENCE:
            return None
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to store in the unit of work of its change (``uow.outbox.append``),
    before it has a sequence."""

    stream: str
    event_id: str
    time: datetime
    envelope: EventEnvelope
    payload: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Relayed:
    """What :meth:`~cortex_core.ports.RelayedLog.append_once` did with one stored
    event: ``record`` is the appended record (None when the log already had that
    event: a repeat, dropped); ``behind`` is set instead when the log has not
    taken the events before it yet (it holds the stored sequence it took last)."""

    record: EventRecord | None = None
    behind: int | None = None
