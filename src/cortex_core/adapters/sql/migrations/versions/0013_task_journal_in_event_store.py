"""Task journals become streams of the event store: ``task_journal`` rows move to
``events`` as stream ``task:<task id>`` (payload: kind, attempt and the JSON body
on three lines), and that table is dropped. Their sequences stay numbered by the
task row (``tasks.last_sequence``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from cortex_core.adapters.sql.tables import UtcDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# EventEnvelope(EventKind.TASK_STATE_CHANGED).pack(), as of this revision.
_ENVELOPE = "task_state_changed" + "\x1f" * 4
_BATCH = 1000

_journal = sa.table(
    "task_journal",
    sa.column("task_id", sa.String),
    sa.column("sequence", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("attempt", sa.Integer),
    sa.column("time", UtcDateTime()),
    sa.column("body", sa.Text),
)
_events = sa.table(
    "events",
    sa.column("stream", sa.String),
    sa.column("sequence", sa.BigInteger),
    sa.column("event_id", sa.String),
    sa.column("time", UtcDateTime()),
    sa.column("envelope", sa.Text),
    sa.column("payload", sa.LargeBinary),
)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(_journal).order_by(_journal.c.task_id, _journal.c.sequence))
    batch: list[dict[str, object]] = []
    for row in rows.all():
        batch.append(
            {
                "stream": "task:" + row.task_id,
                "sequence": row.sequence,
                "event_id": "",
                "time": row.time,
                "envelope": _ENVELOPE,
                "payload": f"{row.kind}\n{row.attempt}\n{row.body}".encode(),
            }
        )
        if len(batch) >= _BATCH:
            bind.execute(_events.insert(), batch)
            batch = []
    if batch:
        bind.execute(_events.insert(), batch)
    op.drop_table("task_journal")


def downgrade() -> None:
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
    bind = op.get_bind()
    tasks = sa.table("tasks", sa.column("id", sa.String))
    rows = bind.execute(
        sa.select(_events).where(_events.c.stream.like("task:%")).order_by(_events.c.stream)
    ).all()
    known = {r.id for r in bind.execute(sa.select(tasks.c.id))}
    for row in rows:
        task_id = row.stream.removeprefix("task:")
        if task_id not in known:
            continue
        kind, attempt, body = bytes(row.payload).decode().split("\n", 2)
        bind.execute(
            _journal.insert().values(
                task_id=task_id,
                sequence=row.sequence,
                kind=kind,
                attempt=int(attempt),
                time=row.time,
                body=body,
            )
        )
    bind.execute(_events.delete().where(_events.c.stream.like("task:%")))
