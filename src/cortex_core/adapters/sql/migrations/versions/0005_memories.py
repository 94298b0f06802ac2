"""Memories, their source messages, and full-text search over their content.

Full-text search differs per dialect and is created with plain SQL:

- SQLite: an FTS5 table ``memories_fts(content, memory_id UNINDEXED)`` with the
  porter stemmer, kept in step by triggers on ``memories``. It keeps its own copy
  of the text and joins on ``memory_id`` (not on ``rowid``, which VACUUM may
  renumber for a table without an INTEGER PRIMARY KEY).
- PostgreSQL: a generated ``tsvector`` column ``search_vector`` (``english``
  configuration) with a GIN index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from cortex_core.adapters.sql.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SQLITE_FTS = (
    "CREATE VIRTUAL TABLE memories_fts USING fts5("
    "content, memory_id UNINDEXED, tokenize = 'porter unicode61')",
    "CREATE TRIGGER memories_fts_insert AFTER INSERT ON memories BEGIN "
    "INSERT INTO memories_fts (content, memory_id) VALUES (new.content, new.id); END",
    "CREATE TRIGGER memories_fts_delete AFTER DELETE ON memories BEGIN "
    "DELETE FROM memories_fts WHERE memory_id = old.id; END",
    "CREATE TRIGGER memories_fts_update AFTER UPDATE OF content ON memories BEGIN "
    "UPDATE memories_fts SET content = new.content WHERE memory_id = old.id; END",
)
_SQLITE_FTS_DROP = (
    "DROP TRIGGER IF EXISTS memories_fts_update",
    "DROP TRIGGER IF EXISTS memories_fts_delete",
    "DROP TRIGGER IF EXISTS memories_fts_insert",
    "DROP TABLE IF EXISTS memories_fts",
)
_POSTGRES_FTS = (
    "ALTER TABLE memories ADD COLUMN search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('english', content)) STORED",
    "CREATE INDEX ix_memories_search_vector ON memories USING gin (search_vector)",
)


def upgrade() -> None:
    op.create_table(
        "memories",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("creator_id", sa.String(64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("expire_time", UtcDateTime(), nullable=True),
        sa.Column("stale", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_memories_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_memories"),
    )
    op.create_index("ix_memories_expire_time", "memories", ["expire_time"])
    op.create_index(
        "ix_memories_workspace_id_create_time", "memories", ["workspace_id", "create_time"]
    )
    op.create_table(
        "memory_sources",
        sa.Column("memory_id", sa.String(64), nullable=False),
        sa.Column("message_name", sa.String(300), nullable=False),
        sa.Column("conversation_name", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["memories.id"],
            name="fk_memory_sources_memory_id_memories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("memory_id", "message_name", name="pk_memory_sources"),
    )
    op.create_index("ix_memory_sources_conversation_name", "memory_sources", ["conversation_name"])
    op.create_index("ix_memory_sources_message_name", "memory_sources", ["message_name"])
    dialect = op.get_bind().dialect.name
    statements = {"sqlite": _SQLITE_FTS, "postgresql": _POSTGRES_FTS}.get(dialect, ())
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_FTS_DROP:
            op.execute(statement)
    op.drop_index("ix_memory_sources_message_name", table_name="memory_sources")
    op.drop_index("ix_memory_sources_conversation_name", table_name="memory_sources")
    op.drop_table("memory_sources")
    op.drop_index("ix_memories_workspace_id_create_time", table_name="memories")
    op.drop_index("ix_memories_expire_time", table_name="memories")
    op.drop_table("memories")
