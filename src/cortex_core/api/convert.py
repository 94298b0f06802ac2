"""Conversion between domain objects and generated protobuf messages, and the
parsing of resource names. The only place that knows both shapes."""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime

from cortex.auth.v1 import user_pb2
from cortex.sessions.v1 import session_pb2, workspace_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from cortex_core import errors
from cortex_core.domain import names
from cortex_core.domain.identity import MemberView, Role, Session, User, Workspace

_ID = r"[A-Za-z0-9_-]{1,64}"
_ROLE_TO_PROTO = {
    Role.OWNER: workspace_pb2.WORKSPACE_ROLE_OWNER,
    Role.EDITOR: workspace_pb2.WORKSPACE_ROLE_EDITOR,
    Role.VIEWER: workspace_pb2.WORKSPACE_ROLE_VIEWER,
}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def duration(seconds: float) -> duration_pb2.Duration:
    """A span in seconds (not negative) as a ``google.protobuf.Duration``."""
    seconds = max(seconds, 0.0)
    whole = math.floor(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def parse_name(name: str, pattern: str, field: str) -> tuple[str, ...]:
    """Split an AIP resource name by ``pattern`` ("workspaces/{}"); INVALID_ARGUMENT if
    it does not match."""
    regex = "^" + re.escape(pattern).replace(r"\{\}", f"({_ID})") + "$"
    match = re.match(regex, name)
    if match is None:
        example = pattern.replace("{}", "ID")
        raise errors.InvalidArgument(
            f"{field} must look like {example}",
            [errors.FieldViolation(field, f"must look like {example}", "INVALID_NAME")],
        )
    return match.groups()


def role_from_proto(value: int) -> Role | None:
    for role, number in _ROLE_TO_PROTO.items():
        if number == value:
            return role
    return None


@functools.lru_cache(maxsize=4096)
def user(value: User) -> user_pb2.User:
    """The proto of ``value`` (cached: users are immutable values; callers must not
    mutate the result, only copy it into a response)."""
    return user_pb2.User(
        name=value.name,
        email=value.email,
        display_name=value.display_name,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
    )


def session(value: Session, *, current_session_id: str = "") -> session_pb2.Session:
    return session_pb2.Session(
        name=value.name,
        create_time=timestamp(value.create_time),
        last_use_time=timestamp(value.last_use_time),
        client_address=value.client_address,
        user_agent=value.user_agent,
        expire_time=timestamp(value.expire_time),
        current=value.id == current_session_id,
    )


def workspace(value: Workspace, role: Role | None = None) -> workspace_pb2.Workspace:
    return workspace_pb2.Workspace(
        name=value.name,
        display_name=value.display_name,
        description=value.description,
        create_time=timestamp(value.create_time),
        update_time=timestamp(value.update_time),
        caller_role=_ROLE_TO_PROTO[role] if role else workspace_pb2.WORKSPACE_ROLE_UNSPECIFIED,
        token_budget=value.token_budget,
        prompt_token_count=value.prompt_tokens,
        completion_token_count=value.completion_tokens,
    )


def member(value: MemberView) -> workspace_pb2.WorkspaceMember:
    return workspace_pb2.WorkspaceMember(
        name=names.member_name(value.workspace_id, value.user_id),
        user=names.user_name(value.user_id),
        email=value.email,
        display_name=value.display_name,
        role=_ROLE_TO_PROTO[value.role],
        create_time=timestamp(value.create_time),
    )


def prefix_violations(error: errors.InvalidArgument, prefix: str) -> errors.InvalidArgument:
    """The same error with every field path under ``prefix`` (``workspace.``)."""
    return errors.InvalidArgument(
        error.message,
        [
            errors.FieldViolation(prefix + v.field, v.description, v.reason)
            for v in error.violations
        ],
        reason=error.reason,
        metadata=error.metadata,
    )
