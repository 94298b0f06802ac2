"""Users, workspaces, memberships and login sessions."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime


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
        return f"users/{self.id}"


@dataclasses.dataclass(frozen=True, slots=True)
class Workspace:
    id: str
    display_name: str
    create_time: datetime
    update_time: datetime

    @property
    def name(self) -> str:
        return f"workspaces/{self.id}"


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
        return f"users/{self.user_id}/sessions/{self.id}"

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
