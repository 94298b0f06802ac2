"""Token usage per conversation and workspace, and a per-workspace token budget.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _counter(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("workspaces") as batch:
        batch.add_column(_counter("token_budget"))
        batch.add_column(_counter("prompt_tokens"))
        batch.add_column(_counter("completion_tokens"))
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(_counter("prompt_tokens"))
        batch.add_column(_counter("completion_tokens"))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("completion_tokens")
        batch.drop_column("prompt_tokens")
    with op.batch_alter_table("workspaces") as batch:
        batch.drop_column("completion_tokens")
        batch.drop_column("prompt_tokens")
        batch.drop_column("token_budget")
