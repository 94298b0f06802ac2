"""Opaque page tokens for keyset pagination, and the one error for a bad one.

A token encodes the sort key of the last item returned, so pages stay stable
while rows are inserted. Tokens are opaque to clients, so anything a client
sends may be forged: every way a token can be wrong (not base64, not JSON, too
long, too deeply nested, parts that are not printable ASCII, a time without a
zone or out of range, a number with other than ASCII digits or beyond
:data:`MAX_NUMBER`, a token of another listing) raises the same
:func:`invalid_page_token`: ``InvalidArgument``, reason ``INVALID_PAGE_TOKEN``,
with a field violation on ``page_token``. Nothing a token holds reaches a
database unchecked.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Generic, TypeVar

from cortex_core.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: Longer tokens are refused before decoding (ours are well under 200 characters).
MAX_TOKEN_CHARS = 1024
#: The largest number a token may carry: a signed 64-bit column holds it.
MAX_NUMBER = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class PageRequest:
    """``size`` items after the key in ``after`` (none: from the start)."""

    size: int = DEFAULT_PAGE_SIZE
    after: tuple[str, ...] | None = None

    @classmethod
    def parse(cls, page_size: int, page_token: str) -> PageRequest:
        """Validate a List request's ``page_size``/``page_token`` (AIP-158 semantics)."""
        if page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative",
                [FieldViolation("page_size", "must be 0 (default) or more")],
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        return cls(size=size, after=decode_token(page_token) if page_token else None)


@dataclasses.dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: Sequence[T]
    next_page_token: str = ""


def encode_token(key: Sequence[str]) -> str:
    raw = json.dumps(list(key), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def invalid_page_token(
    hint: str = "use the next_page_token of a previous response",
) -> InvalidArgument:
    """The error for every page token the server did not issue for this listing."""
    return InvalidArgument(
        "page_token is not valid",
        [FieldViolation("page_token", hint)],
        reason="INVALID_PAGE_TOKEN",
    )


def decode_token(token: str) -> tuple[str, ...]:
    """The key parts of ``token``; raise :func:`invalid_page_token` for a forgery."""
    key: object = None
    if len(token) <= MAX_TOKEN_CHARS:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            key = json.loads(raw)
        except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
            key = None
    if not isinstance(key, list) or not all(_printable_ascii(part) for part in key):
        raise invalid_page_token()
    return tuple(key)


def token_time(part: str) -> datetime:
    """A token's time part, in UTC; raise :func:`invalid_page_token` unless it names
    an instant with its offset that UTC can represent."""
    try:
        value = datetime.fromisoformat(part)
        if value.utcoffset() is None:
            raise ValueError("a time without an offset")
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise invalid_page_token() from None


def token_number(part: str) -> int:
    """A token's count or position: ASCII digits, at most :data:`MAX_NUMBER`."""
    if not (part.isascii() and part.isdigit()) or len(part) > len(str(MAX_NUMBER)):
        raise invalid_page_token()
    value = int(part)
    if value > MAX_NUMBER:
        raise invalid_page_token()
    return value


def _printable_ascii(part: object) -> bool:
    return isinstance(part, str) and part.isascii() and part.isprintable()
