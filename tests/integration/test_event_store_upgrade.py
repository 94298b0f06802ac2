"""Upgrading to the event store keeps what the old tables held: events kept in the old
outbox during a Redis outage, and task journals."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.sql.migrate import alembic_config
from cortex_core.domain.event_records import EventEnvelope, EventKind, NewEvent
from cortex_core.domain.tasks import JournalKind

T0 = datetime(2026, 12, 1, tzinfo=UTC)
ENVELOPE = EventEnvelope(EventKind.WORKSPACE_UPDATED, "w1")


def _to(revision: str, connection: sa.Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_old_outbox_rows_and_task_journals_move_into_the_event_store(db_url: str) -> None:
    database = SqlDatabase.from_url(db_url)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(lambda sync: _to("0010", sync))
            params = {"t": T0}
            await conn.execute(
                sa.text(
                    "INSERT INTO workspaces (id, display_name, create_time, update_time)"
                    " VALUES ('w1', 'w', :t, :t)"
                ),
                params,
            )
            await conn.execute(
                sa.text(
                    "INSERT INTO tasks (id, workspace_id, kind, state, input, max_attempts,"
                    " creator_id, create_time, update_time, last_sequence) VALUES"
                    " ('t1', 'w1', 'expert', 'running', '{}', 1, 'u', :t, :t, 2)"
                ),
                params,
            )
            for sequence, text in ((1, "he"), (2, "llo")):
                await conn.execute(
                    sa.text(
                        "INSERT INTO task_journal (task_id, sequence, kind, attempt, time, body)"
                        " VALUES ('t1', :n, 'output_delta', 1, :t, :b)"
                    ),
                    {"n": sequence, "t": T0, "b": f'{{"text": "{text}"}}'},
                )
            for n in range(2):
                await conn.execute(
                    sa.text(
                        "INSERT INTO outbox (stream, event_id, payload, create_time)"
                        " VALUES ('ws:w1', :e, :p, :t)"
                    ),
                    {"e": f"e{n}", "p": b"\0" + ENVELOPE.pack().encode() + b"\0p%d" % n, "t": T0},
                )
        await database.migrate()
        async with database.unit_of_work() as uow:
            kept = await uow.outbox.read("ws:w1", 0, 10)
            journal = await uow.tasks.read_journal("t1", 0, 10)
            (fresh,) = await uow.outbox.append([NewEvent("ws:w1", "e2", T0, ENVELOPE, b"p2")])
            await uow.commit()
        assert [(r.sequence, r.event_id, r.payload) for r in kept.records] == [
            (1, "e0", b"p0"),
            (2, "e1", b"p1"),
        ]
        assert {r.envelope for r in kept.records} == {ENVELOPE}
        assert fresh.sequence == 3  # numbering goes on after the moved events
        assert [(e.sequence, e.kind) for e in journal.entries] == [
            (1, JournalKind.OUTPUT_DELTA),
            (2, JournalKind.OUTPUT_DELTA),
        ]
        async with database.unit_of_work() as uow:
            assert len(await uow.outbox.pending(10)) == 3  # none relayed yet
    finally:
        await database.dispose()
