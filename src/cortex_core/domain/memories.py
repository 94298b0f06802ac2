"""Memories: durable knowledge kept for a workspace, and the rules for making one.

A memory is immutable once created. It may expire (``expire_time``); an expired
memory is never returned, whether or not the sweeper has removed its row yet. A
memory whose source message no longer exists is *stale*: it is still returned
(flagged) by Get, List and Search, but context windows leave it out.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from cortex_core.domain import names
from cortex_core.errors import FieldViolation, InvalidArgument

MAX_CONTENT = 4000
MAX_SOURCES = 50
MAX_TTL = timedelta(days=3650)
MAX_QUERY = 2000
DEFAULT_SEARCH_PAGE = 10
MAX_SEARCH_PAGE = 100

_ID = r"[A-Za-z0-9_-]{1,64}"
_MESSAGE_NAME = re.compile(rf"^workspaces/({_ID})/conversations/({_ID})/messages/({_ID})$")
_WORD = re.compile(r"\w+", re.UNICODE)
# Words too common to say anything about relevance. Both backends drop them
# before searching, so SQLite (which has no stop list) and PostgreSQL's
# 'english' configuration agree on what matches.
STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


class MemoryKind(enum.Enum):
    FACT = "fact"
    PREFERENCE = "preference"
    ENTITY = "entity"
    NOTE = "note"


@dataclasses.dataclass(frozen=True, slots=True)
class Memory:
    id: str
    workspace_id: str
    content: str
    kind: MemoryKind
    creator_id: str
    create_time: datetime
    expire_time: datetime | None = None
    source_messages: tuple[str, ...] = ()
    stale: bool = False

    @property
    def name(self) -> str:
        return names.memory_name(self.workspace_id, self.id)

    def is_expired(self, now: datetime) -> bool:
        return self.expire_time is not None and self.expire_time <= now


@dataclasses.dataclass(frozen=True, slots=True)
class ScoredMemory:
    """A search hit; ``score`` is in [0, 1], higher is more relevant."""

    memory: Memory
    score: float


@dataclasses.dataclass(frozen=True, slots=True)
class SearchQuery:
    """A validated full-text query: the words to look for, stop words removed.

    Matching is *any* word (OR); memories matching more of the words, and rarer
    ones, rank higher. ``terms`` may be empty when the query held only stop
    words: such a search matches nothing.
    """

    text: str
    terms: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, field: str = "query") -> SearchQuery:
        """Raise InvalidArgument (on ``field``) for an empty, wordless or too long query."""
        if not text.strip():
            raise _invalid(field, "is required", "REQUIRED")
        if len(text) > MAX_QUERY:
            raise _invalid(field, f"must be at most {MAX_QUERY} characters", "TOO_LONG")
        words = [w.casefold() for w in _WORD.findall(text)]
        if not words:
            raise _invalid(field, "must contain at least one word", "INVALID_QUERY")
        terms = tuple(dict.fromkeys(w for w in words if w not in STOP_WORDS))
        return cls(text=text, terms=terms)


def validate_new_memory(
    workspace_id: str,
    content: str,
    kind: MemoryKind | None,
    ttl: timedelta | None,
    source_messages: Sequence[str],
) -> None:
    """Raise InvalidArgument listing every bad field (paths relative to ``memory``)."""
    found: list[FieldViolation] = []
    if not content.strip():
        found.append(FieldViolation("content", "is required", "REQUIRED"))
    elif len(content) > MAX_CONTENT:
        found.append(
            FieldViolation("content", f"must be at most {MAX_CONTENT} characters", "TOO_LONG")
        )
    if kind is None:
        found.append(FieldViolation("kind", "is required", "REQUIRED"))
    if ttl is not None and not timedelta(0) < ttl <= MAX_TTL:
        found.append(FieldViolation("ttl", "must be positive and at most 3650 days"))
    if len(source_messages) > MAX_SOURCES:
        found.append(FieldViolation("source_messages", f"must have at most {MAX_SOURCES} entries"))
    for index, name in enumerate(source_messages):
        match = _MESSAGE_NAME.match(name)
        if match is None:
            found.append(
                FieldViolation(
                    f"source_messages[{index}]",
                    "must look like workspaces/ID/conversations/ID/messages/ID",
                    "INVALID_NAME",
                )
            )
        elif match.group(1) != workspace_id:
            found.append(
                FieldViolation(f"source_messages[{index}]", "must be in the memory's workspace")
            )
    if found:
        raise InvalidArgument("the request has invalid fields", found)


def _invalid(field: str, description: str, reason: str) -> InvalidArgument:
    return InvalidArgument(f"{field} {description}", [FieldViolation(field, description, reason)])
