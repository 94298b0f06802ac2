"""The relational schema, as SQLAlchemy Core tables.

Alembic migrations in ``migrations/versions`` create exactly this schema; a test
compares the two so they cannot drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite has no time zone type, so values are normalised to UTC on the way in
    and tagged as UTC on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(64), primary_key=True)


users = sa.Table(
    "users",
    metadata,
    _id(),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_normalized", sa.String(320), nullable=False, unique=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
)

workspaces = sa.Table(
    "workspaces",
    metadata,
    _id(),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
    sa.Column("description", sa.String(2000), nullable=False, server_default=""),
    sa.Column("token_budget", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"),
)

workspace_members = sa.Table(
    "workspace_members",
    metadata,
    sa.Column(
        "workspace_id",
        sa.String(64),
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column(
        "user_id", sa.String(64), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Index(None, "user_id"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    _id(),
    sa.Column(
        "user_id",
        sa.String(64),
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("last_use_time", UtcDateTime, nullable=False),
    sa.Column("expire_time", UtcDateTime, nullable=False),
    sa.Column("client_address", sa.String(256), nullable=False, server_default=""),
    sa.Column("user_agent", sa.String(512), nullable=False, server_default=""),
    sa.Column("revoke_time", UtcDateTime, nullable=True),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    _id(),
    sa.Column(
        "session_id",
        sa.String(64),
        sa.ForeignKey("sessions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("expire_time", UtcDateTime, nullable=False),
    sa.Column("used_time", UtcDateTime, nullable=True),
)

conversations = sa.Table(
    "conversations",
    metadata,
    _id(),
    sa.Column(
        "workspace_id",
        sa.String(64),
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("title", sa.String(200), nullable=False, server_default=""),
    sa.Column("system_prompt", sa.Text(), nullable=False, server_default=""),
    sa.Column("creator_id", sa.String(64), nullable=False),
    sa.Column("message_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
    sa.Column("last_message_time", UtcDateTime, nullable=True),
    sa.Column("reply_id", sa.String(64), nullable=True),
    sa.Column("reply_lease_until", UtcDateTime, nullable=True),
    sa.Column("prompt_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("completion_tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("tools", sa.Text(), nullable=False, server_default="[]"),  # JSON list of tool ids
    sa.Index(None, "workspace_id", "update_time"),
)

messages = sa.Table(
    "messages",
    metadata,
    _id(),
    sa.Column(
        "conversation_id",
        sa.String(64),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("metadata", sa.Text(), nullable=False, server_default="{}"),
    sa.Column("token_count", sa.Integer(), nullable=False),
    sa.Column("author_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("finish_reason", sa.String(32), nullable=False, server_default=""),
    sa.Column("model", sa.String(200), nullable=False, server_default=""),
    sa.Column("idempotency_key", sa.String(128), nullable=True),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("reply_to", sa.String(64), nullable=True),
    sa.Column("tool_calls", sa.Text(), nullable=False, server_default="[]"),  # JSON, see codec
    sa.Column("tool_result", sa.Text(), nullable=True),  # JSON, see codec
    sa.UniqueConstraint("conversation_id", "position"),
    sa.UniqueConstraint("conversation_id", "idempotency_key"),
)

summaries = sa.Table(
    "summaries",
    metadata,
    _id(),
    sa.Column(
        "conversation_id",
        sa.String(64),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("first_position", sa.Integer(), nullable=False),
    sa.Column("last_position", sa.Integer(), nullable=False),
    sa.Column("first_message_id", sa.String(64), nullable=False),
    sa.Column("last_message_id", sa.String(64), nullable=False),
    sa.Column("message_count", sa.Integer(), nullable=False),
    sa.Column("token_count", sa.Integer(), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
)

# Full-text search objects live outside this metadata, created by migration 0005
# for one dialect each: on SQLite the FTS5 table ``memories_fts`` (and its shadow
# tables and triggers), on PostgreSQL the generated column
# ``memories.search_vector`` and its GIN index ``ix_memories_search_vector``.
memories = sa.Table(
    "memories",
    metadata,
    _id(),
    sa.Column(
        "workspace_id",
        sa.String(64),
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("content", sa.Text(), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("creator_id", sa.String(64), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("expire_time", UtcDateTime, nullable=True, index=True),
    sa.Column("stale", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index(None, "workspace_id", "create_time"),
)

memory_sources = sa.Table(
    "memory_sources",
    metadata,
    sa.Column(
        "memory_id",
        sa.String(64),
        sa.ForeignKey("memories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("message_name", sa.String(300), primary_key=True),
    # workspaces/{w}/conversations/{c}: finds every memory of a deleted conversation.
    sa.Column("conversation_name", sa.String(200), nullable=False, index=True),
    sa.Index(None, "message_name"),
)

# Every event, written in the transaction of its change (adapters/sql/event_store.py):
# per stream, the last sequence given out and the last one relayed to Redis.
event_streams = sa.Table(
    "event_streams",
    metadata,
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("last_sequence", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("relayed_sequence", sa.BigInteger(), nullable=False, server_default="0"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("stream", sa.String(200), primary_key=True),
    sa.Column("sequence", sa.BigInteger(), primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("time", UtcDateTime, nullable=False, index=True),
    sa.Column("envelope", sa.Text(), nullable=False),  # EventEnvelope.pack()
    sa.Column("payload", sa.LargeBinary(), nullable=False),
)

# The task table is the queue (docs/tasks.md): claims are leases on its rows.
tasks = sa.Table(
    "tasks",
    metadata,
    _id(),
    sa.Column(
        "workspace_id",
        sa.String(64),
        sa.ForeignKey("workspaces.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("expert_id", sa.String(64), nullable=False, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("input", sa.Text(), nullable=False),  # JSON object
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("attempt_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("output", sa.Text(), nullable=True),  # JSON object
    sa.Column("error", sa.Text(), nullable=True),  # JSON, see task_codec
    sa.Column("creator_id", sa.String(64), nullable=False),
    sa.Column("create_time", UtcDateTime, nullable=False),
    sa.Column("update_time", UtcDateTime, nullable=False),
    sa.Column("complete_time", UtcDateTime, nullable=True),
    sa.Column("next_attempt_time", UtcDateTime, nullable=True),
    sa.Column("input_request", sa.Text(), nullable=True),  # JSON, see task_codec
    sa.Column("input_expire_time", UtcDateTime, nullable=True, index=True),
    sa.Column("answer", sa.Text(), nullable=True),  # JSON, see task_codec
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("lease_owner", sa.String(128), nullable=False, server_default=""),
    sa.Column("lease_until", UtcDateTime, nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("last_sequence", sa.BigInteger(), nullable=False, server_default="0"),
    # The W3C traceparent of the call that created the task (0011): attempts link to it.
    sa.Column("traceparent", sa.String(64), nullable=False, server_default=""),
    sa.UniqueConstraint("workspace_id", "request_id"),
    sa.Index(None, "state", "next_attempt_time"),
    sa.Index(None, "workspace_id", "create_time"),
    sa.Index(None, "complete_time"),
)

task_attempts = sa.Table(
    "task_attempts",
    metadata,
    sa.Column(
        "task_id",
        sa.String(64),
        sa.ForeignKey("tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("attempt", sa.Integer(), primary_key=True),
    sa.Column("worker", sa.String(128), nullable=False, server_default=""),
    sa.Column("start_time", UtcDateTime, nullable=False),
    sa.Column("end_time", UtcDateTime, nullable=True),
    sa.Column("error", sa.Text(), nullable=True),  # JSON, see task_codec
)
