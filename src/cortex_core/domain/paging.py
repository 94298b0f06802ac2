"""Opaque page tokens for keyset pagination.

A token encodes the sort key of the last item returned, so pages stay stable
while rows are inserted. Tokens are opaque to clients; a token that does not
decode raises :class:`~cortex_core.errors.InvalidArgument`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Sequence
from typing import Generic, TypeVar

from cortex_core.errors import FieldViolation, InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


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


def decode_token(token: str) -> tuple[str, ...]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not isinstance(key, list) or not all(isinstance(part, str) for part in key):
        raise InvalidArgument(
            "page_token is not valid",
            [FieldViolation("page_token", "use the next_page_token of a previous response")],
            reason="INVALID_PAGE_TOKEN",
        )
    return tuple(key)
