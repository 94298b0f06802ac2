"""Checks every request message passes at the edge, before auth and any handler.

A request is refused with ``INVALID_ARGUMENT`` (reason ``INVALID_ARGUMENT``, one
``FieldViolation`` per offending field, at most :data:`MAX_VIOLATIONS`) when:

* a string field, anywhere in the message, holds a NUL character: PostgreSQL's
  ``text`` cannot store one, so without this check it would fail deep inside
  storage (and only on PostgreSQL);
* a ``google.protobuf.Duration`` or ``Timestamp`` is outside the range its own
  definition allows (nanos out of range or of the wrong sign, seconds beyond
  ±10,000 years, a time before 0001-01-01 or after 9999-12-31), which would
  otherwise overflow ``datetime``/``timedelta`` in conversion.

The walk visits only fields that are set (``ListFields``), so a small request
costs a few microseconds; nesting is bounded by protobuf's own recursion limit.
"""

from __future__ import annotations

import functools

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cortex_core.errors import FieldViolation

MAX_VIOLATIONS = 10
NUL_DESCRIPTION = "must not contain NUL characters"
OUT_OF_RANGE_DESCRIPTION = "is out of range"

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_DURATION = "google.protobuf.Duration"
_TIMESTAMP = "google.protobuf.Timestamp"
_MAX_NANOS = 999_999_999
_MAX_DURATION_SECONDS = 315_576_000_000  # 10,000 years, Duration's documented bound
_MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
_MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z


def request_violations(message: Message) -> list[FieldViolation]:
    """The violations in ``message`` (empty when it may go on to the handler)."""
    found: list[FieldViolation] = []
    _walk(message, "", found)
    return found


_OTHER, _TEXT, _TEXTS, _MESSAGE_ONE, _MESSAGES, _MAP = range(6)


@functools.cache
def _kind(field: FieldDescriptor) -> int:
    """How to walk ``field`` (cached: descriptor attributes and ``GetOptions()`` are
    slow to read on every request)."""
    if field.type == _STRING:
        return _TEXTS if field.is_repeated else _TEXT
    if field.type != _MESSAGE:
        return _OTHER
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        return _MAP
    return _MESSAGES if field.is_repeated else _MESSAGE_ONE


def _walk(message: Message, prefix: str, found: list[FieldViolation]) -> None:
    for field, value in message.ListFields():
        if len(found) >= MAX_VIOLATIONS:
            return
        kind = _kind(field)
        if kind == _OTHER:
            continue
        path = prefix + field.name
        if kind == _TEXT:
            _text(path, value, found)
        elif kind == _TEXTS:
            for index, item in enumerate(value):
                _text(f"{path}[{index}]", item, found)
        elif kind == _MESSAGE_ONE:
            _item(path, value, found)
        elif kind == _MESSAGES:
            for index, item in enumerate(value):
                _item(f"{path}[{index}]", item, found)
        else:
            # Named by the map field alone: a key may itself be the bad text.
            for key, item in value.items():
                if isinstance(key, str):
                    _text(path, key, found)
                _item(path, item, found)


def _item(path: str, value: object, found: list[FieldViolation]) -> None:
    if isinstance(value, str):
        _text(path, value, found)
    elif isinstance(value, Message):
        kind = value.DESCRIPTOR.full_name
        if kind == _DURATION:
            _duration(path, value, found)
        elif kind == _TIMESTAMP:
            _timestamp(path, value, found)
        else:
            _walk(value, path + ".", found)


def _text(path: str, value: str, found: list[FieldViolation]) -> None:
    if "\x00" in value and len(found) < MAX_VIOLATIONS:
        found.append(FieldViolation(path, NUL_DESCRIPTION, "INVALID_CHARACTER"))


def _duration(path: str, value: Message, found: list[FieldViolation]) -> None:
    seconds: int = value.seconds  # type: ignore[attr-defined]
    nanos: int = value.nanos  # type: ignore[attr-defined]
    if (
        abs(seconds) > _MAX_DURATION_SECONDS
        or abs(nanos) > _MAX_NANOS
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        found.append(FieldViolation(path, OUT_OF_RANGE_DESCRIPTION, "OUT_OF_RANGE"))


def _timestamp(path: str, value: Message, found: list[FieldViolation]) -> None:
    seconds: int = value.seconds  # type: ignore[attr-defined]
    nanos: int = value.nanos  # type: ignore[attr-defined]
    if not _MIN_TIMESTAMP_SECONDS <= seconds <= _MAX_TIMESTAMP_SECONDS or not (
        0 <= nanos <= _MAX_NANOS
    ):
        found.append(FieldViolation(path, OUT_OF_RANGE_DESCRIPTION, "OUT_OF_RANGE"))
