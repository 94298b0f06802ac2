"""Tools in replies: the tools a conversation may call, the calls an assistant
message made and the result a tool message holds (JSON text), and finish reasons
long enough for ``approval_required``.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("tools", sa.Text(), nullable=False, server_default="[]"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("tool_calls", sa.Text(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("tool_result", sa.Text(), nullable=True))
        batch.alter_column(
            "finish_reason",
            existing_type=sa.String(16),
            type_=sa.String(32),
            existing_nullable=False,
            existing_server_default="",
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.alter_column(
            "finish_reason",
            existing_type=sa.String(32),
            type_=sa.String(16),
            existing_nullable=False,
            existing_server_default="",
        )
        batch.drop_column("tool_result")
        batch.drop_column("tool_calls")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("tools")
