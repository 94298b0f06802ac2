"""Replies: a lease per conversation (one generation at a time, across replicas)
and the link from an assistant message to the user message it answers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

from cortex_core.adapters.sql.tables import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("reply_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("reply_lease_until", UtcDateTime(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reply_to", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reply_to")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("reply_lease_until")
        batch.drop_column("reply_id")
