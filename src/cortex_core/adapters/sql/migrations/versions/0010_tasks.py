"""Expert tasks: the task table (also the queue, claimed with leases), attempts
and the per-task journal WatchTask replays. Summary jobs become internal tasks
(kind ``summary``) on the same table: queued ``summary_jobs`` rows are moved
over, and that table is dropped.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from cortex_core.adapters.sql.tables import UtcDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("workspace_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("expert_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("creator_id", sa.String(64), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.Column("update_time", UtcDateTime(), nullable=False),
        sa.Column("complete_time", UtcDateTime(), nullable=True),
        sa.Column("next_attempt_time", UtcDateTime(), nullable=True),
        sa.Column("input_request", sa.Text(), nullable=True),
        sa.Column("input_expire_time", UtcDateTime(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("lease_owner", sa.String(128), nullable=False, server_default=""),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name="fk_tasks_workspace_id_workspaces",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("workspace_id", "request_id", name="uq_tasks_workspace_id_request_id"),
    )
    op.create_index("ix_tasks_state_next_attempt_time", "tasks", ["state", "next_attempt_time"])
    op.create_index("ix_tasks_workspace_id_create_time", "tasks", ["workspace_id", "create_time"])
    op.create_index("ix_tasks_complete_time", "tasks", ["complete_time"])
    op.create_index("ix_tasks_input_expire_time", "tasks", ["input_expire_time"])
    op.create_table(
        "task_attempts",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(128), nullable=False, server_default=""),
        sa.Column("start_time", UtcDateTime(), nullable=False),
        sa.Column("end_time", UtcDateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_attempts_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "attempt", name="pk_task_attempts"),
    )
    op.create_table(
        "task_journal",
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_journal_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("task_id", "sequence", name="pk_task_journal"),
    )

    _move_summary_jobs()
    op.drop_table("summary_jobs")


def _move_summary_jobs() -> None:
    """Every queued summary job becomes a queued summary task."""
    bind = op.get_bind()
    jobs = sa.table(
        "summary_jobs",
        sa.column("conversation_id", sa.String),
        sa.column("token_budget", sa.Integer),
        sa.column("request_time", UtcDateTime()),
    )
    conversations = sa.table(
        "conversations", sa.column("id", sa.String), sa.column("workspace_id", sa.String)
    )
    rows = bind.execute(
        sa.select(
            jobs.c.conversation_id, jobs.c.token_budget, jobs.c.request_time,
            conversations.c.workspace_id,
        ).join(conversations, conversations.c.id == jobs.c.conversation_id)
    ).all()  # fmt: skip
    tasks = sa.table(
        "tasks",
        *(
            sa.column(name)
            for name in (
                "id", "workspace_id", "kind", "expert_id", "state", "input", "max_attempts",
                "creator_id", "create_time", "update_time",
            )
        ),
    )  # fmt: skip
    for conversation_id, budget, requested, workspace_id in rows:
        when = requested or datetime.now(UTC)
        bind.execute(
            tasks.insert().values(
                id=uuid.uuid4().hex,
                workspace_id=workspace_id,
                kind="summary",
                expert_id=conversation_id,
                state="queued",
                input=json.dumps({"conversation_id": conversation_id, "token_budget": budget}),
                max_attempts=5,
                creator_id="",
                create_time=when,
                update_time=when,
            )
        )


def downgrade() -> None:
    op.create_table(
        "summary_jobs",
        sa.Column("conversation_id", sa.String(64), nullable=False),
        sa.Column("token_budget", sa.Integer(), nullable=False),
        sa.Column("request_time", UtcDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_summary_jobs_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name="pk_summary_jobs"),
    )
    op.drop_table("task_journal")
    op.drop_table("task_attempts")
    op.drop_index("ix_tasks_input_expire_time", table_name="tasks")
    op.drop_index("ix_tasks_complete_time", table_name="tasks")
    op.drop_index("ix_tasks_workspace_id_create_time", table_name="tasks")
    op.drop_index("ix_tasks_state_next_attempt_time", table_name="tasks")
    op.drop_table("tasks")
