"""Users, workspaces, memberships and login sessions."""

from __future__ import annotations

import dataclasses
import enum
import re
import uuid
from datetime import datetime
from typing import Protocol

from cortex_core.domain import names
from cortex_core.errors import FieldViolation, InvalidArgument

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 320
MAX_DISPLAY_NAME = 100
MAX_DESCRIPTION = 2000


def new_id() -> str:
    """A fresh resource id: 32 lowercase hex characters."""
    return uuid.uuid4().hex


def normalize_email(email: str) -> str:
    return email.strip().casefold()


def email_violation(email: str, field: str = "email") -> FieldViolation | None:
    if not email.strip():
        return FieldViolation(field, "is required", "REQUIRED")
    if len(email) > MAX_EMAIL or not _EMAIL.match(email.strip()):
        return FieldViolation(field, "is not a valid email address", "INVALID_EMAIL")
    return None


def text_violation(value: str, field: str, *, required: bool, limit: int) -> FieldViolation | None:
    if required and not value.strip():
        return FieldViolation(field, "is required", "REQUIRED")
    if len(value) > limit:
        return FieldViolation(field, f"must be at most {limit} characters", "TOO_LONG")
    return None


def reject(violations: list[FieldViolation | None]) -> None:
    """Raise InvalidArgument listing every violation found, if any."""
    found = [v for v in violations if v is not None]
    if found:
        raise InvalidArgument("the request has invalid fields", found)


class Role(enum.Enum):
    """A member's role in a workspace; owners manage members, viewers only read."""

    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"

    @property
    def can_write(self) -> bool:
        return self is not Role.VIEWER

    @property
    def can_manage_members(self) -> bool:
        return self is Role.OWNER


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    display_name: str
    password_hash: str
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return names.user_name(self.id)


@dataclasses.dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    display_name: str
    create_time: datetime
    update_time: datetime
    description: str = ""
    token_budget: int = 0  # prompt + completion tokens its replies may use; 0: no limit
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def name(self) -> str:
        return names.workspace_name(self.id)

    @property
    def tokens_left(self) -> int | None:
        """Tokens the budget still allows (None: no budget)."""
        if not self.token_budget:
            return None
        return max(self.token_budget - self.prompt_tokens - self.completion_tokens, 0)


@dataclasses.dataclass(frozen=True, slots=True)
class Membership:
    workspace_id: str
    user_id: str
    role: Role
    create_time: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    """A login: one refresh-token family and the access tokens minted from it."""

    id: str
    user_id: str
    create_time: datetime
    last_use_time: datetime
    expire_time: datetime
    client_address: str = ""
    user_agent: str = ""
    revoke_time: datetime | None = None

    @property
    def name(self) -> str:
        return names.session_name(self.user_id, self.id)

    def is_active(self, now: datetime) -> bool:
        return self.revoke_time is None and now < self.expire_time


@dataclasses.dataclass(frozen=True, slots=True)
class MemberView:
    """A membership joined with the member's public profile."""

    workspace_id: str
    user_id: str
    email: str
    display_name: str
    role: Role
    create_time: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class RefreshToken:
    """One link of a session's refresh-token chain; only its SHA-256 is stored."""

    id: str
    session_id: str
    token_hash: str
    create_time: datetime
    expire_time: datetime
    used_time: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a call came from, as recorded on the sessions it opens."""

    address: str = ""
    user_agent: str = ""


class Actor(Protocol):
    """Whoever a use case acts for: a signed-in :class:`Caller`, or a tool call made
    for a user (``ToolContext``). Access checks need only the user's id."""

    @property
    def user_id(self) -> str: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated principal of a call: the user and the session of its token."""

    user: User
    session_id: str
    token_expire_time: datetime

    @property
    def user_id(self) -> str:
        return self.user.id
