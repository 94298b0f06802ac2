"""SQL implementation of :class:`~cortex_core.ports.TaskRepository`: the task
table is the queue.

* **Claims.** ``claim_next`` picks the oldest claimable row. On PostgreSQL it
  is ``SELECT … FOR UPDATE SKIP LOCKED``: concurrent claimers skip a row one of
  them holds, so they never wait on each other and never take the same row. On
  SQLite writes are serialized by the database's write lock
  (``connection.py``) and the claim is made safe by its fenced UPDATE alone: of
  two claimers that read the same candidate, the second one's fence fails.
* **Fencing.** ``save`` is one conditional UPDATE (``state``,
  ``attempt_count`` and ``lease_owner`` as the writer last saw them). A worker
  whose lease expired and was taken over can therefore write nothing more.
* **Journal.** ``journal`` bumps ``tasks.last_sequence`` with
  ``UPDATE … RETURNING`` (a row lock on PostgreSQL, the write lock on SQLite),
  so sequences are dense, per task, and allocated in the transaction of the
  change they describe. The entries are a stream of the event store
  (``task:<id>`` in ``events``, adapters/sql/outbox.py): one table and one
  append-in-the-transaction for every event and every journal. Pruning: a
  task's journal keeps its newest :data:`JOURNAL_CAP` entries (older ones are
  deleted as new ones arrive; text is coalesced, so only a very long task
  reaches it), and the whole task goes, journal and attempts with it, when
  the sweeper deletes terminal tasks older than the retention (``CORTEX_TASK_RETENTION``).
"""

from __future__ import annotations

import builtins
import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from cortex_core import errors
from cortex_core.adapters.sql import tables
from cortex_core.adapters.sql import task_codec as codec
from cortex_core.adapters.sql.connection import Connection
from cortex_core.adapters.sql.outbox import insert_records, oldest_sequence, read_records
from cortex_core.adapters.sql.paging import paginate
from cortex_core.domain.event_records import EventEnvelope, EventKind, EventRecord
from cortex_core.domain.events import task_stream
from cortex_core.domain.paging import Page, PageRequest
from cortex_core.domain.tasks import (
    Fence,
    JournalDraft,
    JournalEntry,
    JournalKind,
    JournalRead,
    Task,
    TaskKind,
    TaskState,
    frozen,
)

t, a, ev = tables.tasks, tables.task_attempts, tables.events
r = t.alias("running")
_JOURNAL_ENVELOPE = EventEnvelope(EventKind.TASK_STATE_CHANGED)

JOURNAL_CAP = 10_000
RUNNING_LOCK = "cortex.tasks.running:"  # advisory lock key prefix, per workspace


class SqlTaskRepository:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    async def add(self, task: Task) -> None:
        try:
            async with self._conn.begin_nested():
                await self._conn.execute(t.insert().values(id=task.id, **_row(task)))
        except exc.IntegrityError:
            raise errors.AlreadyExists("this request_id was just used in the workspace") from None
        await self._write_attempts(task, 1)

    async def get(self, workspace_id: str, task_id: str) -> Task | None:
        return await self._load(sa.and_(t.c.id == task_id, t.c.workspace_id == workspace_id))

    async def get_by_id(self, task_id: str) -> Task | None:
        return await self._load(t.c.id == task_id)

    async def by_request_id(
        self, workspace_id: str, request_id: str, since: datetime
    ) -> Task | None:
        task = await self._load(
            sa.and_(t.c.workspace_id == workspace_id, t.c.request_id == request_id)
        )
        if task is not None and task.create_time < since:
            # Older than the dedupe window: the id is free again.
            await self._conn.execute(t.update().where(t.c.id == task.id).values(request_id=None))
            return None
        return task

    async def find_open(self, workspace_id: str, kind: TaskKind, subject: str) -> Task | None:
        return await self._load(
            sa.and_(
                t.c.workspace_id == workspace_id,
                t.c.kind == kind.value,
                t.c.expert_id == subject,
                t.c.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]),
            )
        )

    async def count_open(self, kind: TaskKind) -> int:
        query = sa.select(sa.func.count()).where(
            t.c.kind == kind.value,
            t.c.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]),
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def list(
        self,
        workspace_id: str,
        page: PageRequest,
        *,
        state: TaskState | None = None,
        expert_id: str = "",
    ) -> Page[Task]:
        query = sa.select(t).where(
            t.c.workspace_id == workspace_id, t.c.kind == TaskKind.EXPERT.value
        )
        if state is not None:
            query = query.where(t.c.state == state.value)
        if expert_id:
            query = query.where(t.c.expert_id == expert_id)
        rows = await paginate(
            self._conn,
            query,
            t.c.create_time,
            t.c.id,
            page,
            lambda row: row,
            lambda row: (row.create_time, row.id),
            newest_first=True,
            scope=(state.value if state else "", expert_id),
        )
        attempts = await self._attempts([row.id for row in rows.items])
        return Page(
            items=[_task(row, attempts.get(row.id, [])) for row in rows.items],
            next_page_token=rows.next_page_token,
        )

    async def count_active(self, workspace_id: str) -> tuple[int, int]:
        query = (
            sa.select(t.c.state, sa.func.count())
            .where(
                t.c.workspace_id == workspace_id,
                t.c.kind == TaskKind.EXPERT.value,
                t.c.state.in_([TaskState.QUEUED.value, TaskState.RUNNING.value]),
            )
            .group_by(t.c.state)
        )
        counts = {row[0]: int(row[1]) for row in (await self._conn.execute(query)).all()}
        return counts.get(TaskState.QUEUED.value, 0), counts.get(TaskState.RUNNING.value, 0)

    async def claim_next(
        self, now: datetime, kinds: Sequence[TaskKind], *, running_limit: int = 0
    ) -> Task | None:
        # One read of the whole row: what is checked (claimable) is what the caller
        # fences on. (Reading the id first and the row after let a claimer see a row
        # another had just claimed, and take it as one with an expired lease.)
        queued = sa.and_(
            t.c.state == TaskState.QUEUED.value,
            sa.or_(t.c.next_attempt_time.is_(None), t.c.next_attempt_time <= now),
        )
        if running_limit > 0:
            full = (
                sa.select(r.c.workspace_id)
                .where(*_running_expert(r, now))
                .group_by(r.c.workspace_id)
                .having(sa.func.count() >= running_limit)
            )
            queued = sa.and_(
                queued,
                sa.or_(t.c.kind != TaskKind.EXPERT.value, t.c.workspace_id.not_in(full)),
            )
        query = (
            sa.select(t)
            .where(
                t.c.kind.in_([k.value for k in kinds]),
                sa.or_(
                    queued,
                    sa.and_(t.c.state == TaskState.RUNNING.value, t.c.lease_until < now),
                ),
            )
            .order_by(t.c.create_time, t.c.id)
            .limit(1)
        )
        postgresql = self._conn.dialect.name == "postgresql"
        if postgresql:
            query = query.with_for_update(skip_locked=True, of=t)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        if (
            running_limit > 0
            and row.kind == TaskKind.EXPERT.value
            and row.state == TaskState.QUEUED.value
            and not await self._running_slot(row.workspace_id, row.id, now, running_limit)
        ):
            return None  # another claimer took the workspace's last slot meanwhile
        attempts = await self._attempts([row.id])
        return _task(row, attempts.get(row.id, []))

    async def _running_slot(
        self, workspace_id: str, task_id: str, now: datetime, limit: int
    ) -> bool:
        """Whether the workspace has fewer than ``limit`` running expert tasks,
        counted under a per-workspace lock held to the end of the transaction
        (PostgreSQL: an advisory lock; SQLite: the write lock, taken by a no-op
        write), so two claimers cannot both take its last slot."""
        if self._conn.dialect.name == "postgresql":
            key = sa.func.hashtext(sa.literal(RUNNING_LOCK) + workspace_id)
            await self._conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
        else:
            await self._conn.execute(
                t.update().where(t.c.id == task_id).values(lease_owner=t.c.lease_owner)
            )
        running = await self._conn.execute(
            sa.select(sa.func.count()).where(
                *_running_expert(t, now), t.c.workspace_id == workspace_id
            )
        )
        return int(running.scalar_one()) < limit

    async def count_queued(self, kinds: Sequence[TaskKind]) -> int:
        query = sa.select(sa.func.count()).where(
            t.c.kind.in_([k.value for k in kinds]), t.c.state == TaskState.QUEUED.value
        )
        return int((await self._conn.execute(query)).scalar_one())

    async def save(self, task: Task, *, expected: Fence) -> bool:
        values = _row(task)
        fixed_fields = (
            "workspace_id", "kind", "creator_id", "create_time", "last_sequence", "traceparent",
        )  # fmt: skip
        for fixed in fixed_fields:
            values.pop(fixed)
        written = await self._conn.execute(
            t.update().where(t.c.id == task.id, *_fenced(expected)).values(**values)
        )
        if written.rowcount != 1:
            return False
        await self._write_attempts(task, max(expected.attempt_count, 1))
        return True

    async def request_cancel(self, task_id: str) -> bool:
        flagged = await self._conn.execute(
            t.update()
            .where(t.c.id == task_id, t.c.state == TaskState.RUNNING.value)
            .values(cancel_requested=True)
        )
        return bool(flagged.rowcount)

    async def heartbeat(
        self, task_id: str, owner: str, attempt: int, lease_until: datetime
    ) -> bool | None:
        kept = await self._conn.execute(
            t.update()
            .where(
                t.c.id == task_id,
                *_fenced(Fence(TaskState.RUNNING, attempt, owner)),
            )
            .values(lease_until=lease_until)
            .returning(t.c.cancel_requested)
        )
        row = kept.first()
        return None if row is None else bool(row[0])

    async def journal(
        self, task_id: str, drafts: Sequence[JournalDraft], now: datetime, *, fence: Fence | None
    ) -> builtins.list[JournalEntry]:
        if not drafts:
            return []
        bump = t.update().where(t.c.id == task_id)
        if fence is not None:
            bump = bump.where(*_fenced(fence))
        bumped = await self._conn.execute(
            bump.values(last_sequence=t.c.last_sequence + len(drafts)).returning(t.c.last_sequence)
        )
        last = bumped.scalar_one_or_none()
        if last is None:
            return []
        entries = []
        for offset, draft in enumerate(drafts):
            sequence = last - len(drafts) + 1 + offset
            body = draft.body
            if isinstance(body, Task):
                body = dataclasses.replace(body, last_sequence=sequence)
            entries.append(JournalEntry(task_id, sequence, draft.kind, draft.attempt, now, body))
        await insert_records(self._conn, [_journal_record(e) for e in entries])
        if last > JOURNAL_CAP:
            await self._conn.execute(
                ev.delete().where(
                    ev.c.stream == task_stream(task_id), ev.c.sequence <= last - JOURNAL_CAP
                )
            )
        return entries

    async def read_journal(self, task_id: str, after_sequence: int, limit: int) -> JournalRead:
        last = (
            await self._conn.execute(sa.select(t.c.last_sequence).where(t.c.id == task_id))
        ).scalar_one_or_none() or 0
        stream = task_stream(task_id)
        oldest = await oldest_sequence(self._conn, stream)
        entries: tuple[JournalEntry, ...] = ()
        if limit > 0:
            records = await read_records(self._conn, stream, after_sequence, limit)
            entries = tuple(_entry(task_id, record) for record in records)
        return JournalRead(entries, oldest if oldest is not None else last + 1, int(last))

    async def expired_inputs(self, now: datetime, limit: int) -> builtins.list[Task]:
        query = (
            sa.select(t.c.id)
            .where(
                t.c.state == TaskState.INPUT_REQUIRED.value,
                t.c.input_expire_time <= now,
            )
            .order_by(t.c.input_expire_time)
            .limit(limit)
        )
        ids = (await self._conn.execute(query)).scalars().all()
        found = [await self.get_by_id(task_id) for task_id in ids]
        return [task for task in found if task is not None]

    async def delete_completed(self, before: datetime, limit: int) -> int:
        ids = (
            (
                await self._conn.execute(
                    sa.select(t.c.id)
                    .where(t.c.complete_time.is_not(None), t.c.complete_time < before)
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
        if not ids:
            return 0
        # Children first: both backends identical whatever the foreign-key pragma.
        await self._conn.execute(ev.delete().where(ev.c.stream.in_([task_stream(i) for i in ids])))
        await self._conn.execute(a.delete().where(a.c.task_id.in_(ids)))
        await self._conn.execute(t.delete().where(t.c.id.in_(ids)))
        return len(ids)

    async def _load(self, where: sa.ColumnElement[bool]) -> Task | None:
        row = (await self._conn.execute(sa.select(t).where(where).limit(1))).first()
        if row is None:
            return None
        attempts = await self._attempts([row.id])
        return _task(row, attempts.get(row.id, []))

    async def _attempts(self, task_ids: Sequence[str]) -> dict[str, builtins.list[Any]]:
        if not task_ids:
            return {}
        rows = (
            await self._conn.execute(
                sa.select(a).where(a.c.task_id.in_(task_ids)).order_by(a.c.task_id, a.c.attempt)
            )
        ).all()
        found: dict[str, builtins.list[Any]] = {}
        for row in rows:
            found.setdefault(row.task_id, []).append(row)
        return found

    async def _write_attempts(self, task: Task, first: int) -> None:
        """Replace attempts numbered ``first`` and later with the task's."""
        await self._conn.execute(a.delete().where(a.c.task_id == task.id, a.c.attempt >= first))
        fresh = [x for x in task.attempts if x.number >= first]
        if fresh:
            await self._conn.execute(
                a.insert(),
                [
                    {
                        "task_id": task.id,
                        "attempt": x.number,
                        "worker": x.worker,
                        "start_time": x.start_time,
                        "end_time": x.end_time,
                        "error": _json(codec.error_value(x.error)),
                    }
                    for x in fresh
                ],
            )


def _running_expert(table: Any, now: datetime) -> list[sa.ColumnElement[bool]]:
    """Expert tasks running with a live lease (an expired one frees its slot)."""
    return [
        table.c.kind == TaskKind.EXPERT.value,
        table.c.state == TaskState.RUNNING.value,
        table.c.lease_until >= now,
    ]


def _fenced(expected: Fence) -> list[sa.ColumnElement[bool]]:
    conditions = [
        t.c.state == expected.state.value,
        t.c.attempt_count == expected.attempt_count,
        t.c.lease_owner == expected.lease_owner,
    ]
    if expected.update_time is not None:
        conditions.append(t.c.update_time == expected.update_time)
    return conditions


def _json(value: Any) -> str | None:
    return codec.dumps(value) if value is not None else None


def _row(task: Task) -> dict[str, Any]:
    request = task.input_request
    return {
        "workspace_id": task.workspace_id,
        "kind": task.kind.value,
        "expert_id": task.expert_id,
        "state": task.state.value,
        "input": codec.dumps(dict(task.input)),
        "max_attempts": task.max_attempts,
        "attempt_count": task.attempt_count,
        "output": _json(dict(task.output) if task.output is not None else None),
        "error": _json(codec.error_value(task.error)),
        "creator_id": task.creator_id,
        "create_time": task.create_time,
        "update_time": task.update_time,
        "complete_time": task.complete_time,
        "next_attempt_time": task.next_attempt_time,
        "input_request": _json(codec.request_value(request)),
        "input_expire_time": request.expire_time if request is not None else None,
        "answer": _json(codec.answer_value(task.answer)),
        "request_id": task.request_id or None,
        "lease_owner": task.lease_owner,
        "lease_until": task.lease_until,
        "cancel_requested": task.cancel_requested,
        "last_sequence": task.last_sequence,
        "traceparent": task.traceparent,
    }


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def _task(row: Any, attempts: Sequence[Any]) -> Task:
    output = _loads(row.output)
    return Task(
        id=row.id,
        workspace_id=row.workspace_id,
        expert_id=row.expert_id,
        input=frozen(_loads(row.input)),
        max_attempts=row.max_attempts,
        creator_id=row.creator_id,
        create_time=row.create_time,
        update_time=row.update_time,
        kind=TaskKind(row.kind),
        state=TaskState(row.state),
        attempts=tuple(
            codec.attempt_of(
                {
                    "number": x.attempt,
                    "start_time": x.start_time.isoformat(),
                    "worker": x.worker,
                    "end_time": x.end_time.isoformat() if x.end_time else None,
                    "error": _loads(x.error),
                }
            )
            for x in attempts
        ),
        output=frozen(output) if output is not None else None,
        error=codec.error_of(_loads(row.error)),
        complete_time=row.complete_time,
        next_attempt_time=row.next_attempt_time,
        input_request=codec.request_of(_loads(row.input_request)),
        answer=codec.answer_of(_loads(row.answer)),
        request_id=row.request_id or "",
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
        cancel_requested=row.cancel_requested,
        last_sequence=row.last_sequence,
        traceparent=row.traceparent,
    )


def _journal_record(entry: JournalEntry) -> EventRecord:
    """A journal entry as a record of the event store: ``kind``, ``attempt`` and the
    JSON body on three lines of the payload."""
    body = codec.body_json(entry.kind, entry.body)
    payload = f"{entry.kind.value}\n{entry.attempt}\n{body}".encode()
    return EventRecord(
        task_stream(entry.task_id), entry.sequence, "", entry.time, _JOURNAL_ENVELOPE, payload
    )


def _entry(task_id: str, record: EventRecord) -> JournalEntry:
    kind_text, attempt, body = record.payload.decode().split("\n", 2)
    kind = JournalKind(kind_text)
    return JournalEntry(
        task_id, record.sequence, kind, int(attempt), record.time, codec.body_of(kind, body)
    )
