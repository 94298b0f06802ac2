"""Events written in the transaction of their change: the event store.

``event_streams`` holds, per event stream, the last sequence a transaction gave
out (bumped in the transaction that writes the event, so a stream's sequences
follow commit order with no gap) and the last one relayed to an external event
log (Redis). ``events`` holds the events themselves: the log when no external
log is configured, the outbox in front of Redis otherwise. Rows of the old
``outbox`` table (events kept during a Redis outage) are moved over, in order,
and that table is dropped.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

from cortex_core.adapters.sql.tables import UtcDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "event_streams",
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("relayed_sequence", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("stream", name="pk_event_streams"),
    )
    op.create_table(
        "events",
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("time", UtcDateTime(), nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("stream", "sequence", name="pk_events"),
    )
    op.create_index("ix_events_time", "events", ["time"])
    _move_outbox()
    op.drop_table("outbox")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite numbers an event inside its INSERT (adapters/sql/outbox.py); this
        # moves the stream's last sequence along in the same statement. Task
        # journals are numbered by their task row instead.
        op.execute(
            "CREATE TRIGGER events_number AFTER INSERT ON events"
            " WHEN NEW.stream NOT LIKE 'task:%'"
            " BEGIN"
            " INSERT OR IGNORE INTO event_streams (stream, last_sequence, relayed_sequence)"
            " VALUES (NEW.stream, 0, 0);"
            " UPDATE event_streams SET last_sequence = NEW.sequence"
            " WHERE stream = NEW.stream AND last_sequence < NEW.sequence;"
            " END"
        )


def _move_outbox() -> None:
    """Old outbox rows (``b"\\0" + envelope + b"\\0" + payload``) become events,
    numbered per stream in the order they were kept; others are dropped (the old
    relay dropped them too)."""
    bind = op.get_bind()
    outbox = sa.table(
        "outbox",
        sa.column("id", sa.Integer),
        sa.column("stream", sa.String),
        sa.column("event_id", sa.String),
        sa.column("payload", sa.LargeBinary),
        sa.column("create_time", UtcDateTime()),
    )
    rows = bind.execute(sa.select(outbox).order_by(outbox.c.id)).all()
    last: dict[str, int] = {}
    events = sa.table(
        "events",
        *(sa.column(n) for n in ("stream", "sequence", "event_id", "envelope", "payload")),
        sa.column("time", UtcDateTime()),
    )
    for row in rows:
        kept = bytes(row.payload)
        if kept[:1] != b"\0" or b"\0" not in kept[1:]:
            continue
        packed, _, payload = kept[1:].partition(b"\0")
        sequence = last[row.stream] = last.get(row.stream, 0) + 1
        bind.execute(
            events.insert().values(
                stream=row.stream,
                sequence=sequence,
                event_id=row.event_id,
                time=row.create_time,
                envelope=packed.decode(errors="replace"),
                payload=payload,
            )
        )
    streams = sa.table("event_streams", sa.column("stream"), sa.column("last_sequence"))
    for stream, sequence in last.items():
        bind.execute(streams.insert().values(stream=stream, last_sequence=sequence))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS events_number")
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("stream", sa.String(200), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("create_time", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.drop_index("ix_events_time", table_name="events")
    op.drop_table("events")
    op.drop_table("event_streams")
