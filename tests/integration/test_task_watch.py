"""The WatchTask policy (``services/task_watch.py``) over real storage.

Tasks are created and cancelled through the real ``Tasks`` use case on SQLite
and PostgreSQL, and journal entries are appended through the real repository and
announced through the in-process signals, as the runner does. No runner runs,
so the test decides every frame.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cortex_core import errors
from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.adapters.security.jwt_codec import JwtAccessTokenCodec
from cortex_core.adapters.security.keys import load_key_ring
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.task_signals import LocalTaskSignals
from cortex_core.domain.event_records import Heartbeat
from cortex_core.domain.identity import Caller, Membership, Role, User, Workspace
from cortex_core.domain.tasks import Expert, JournalDraft, JournalKind, Progress, Task, TaskState
from cortex_core.services.authentication import Authenticator
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.experts import ExpertCatalog
from cortex_core.services.session_guard import SessionWatcher
from cortex_core.services.task_watch import JournalPruned, TaskWatch, TaskWatches
from cortex_core.services.tasks import Tasks

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ECHO = Expert("echo", "Echo", "Says it back", "Repeat the text.")


class World:
    def __init__(self, database: SqlDatabase, tmp_path: Path, queue_size: int = 64) -> None:
        self.database = database
        self.clock = SystemClock()
        self.signals = LocalTaskSignals()
        self.tasks = Tasks(
            uow=database.unit_of_work,
            clock=self.clock,
            events=EventBus(),
            signals=self.signals,
            experts=ExpertCatalog([ECHO], {"echo": LocalDevelopmentProvider()}),
            max_queued=100,
        )
        ring, _ = load_key_ring("watch-test-secret-" + "k" * 48, [], tmp_path)
        self.sessions = SessionWatcher(
            authenticator=Authenticator(
                tokens=JwtAccessTokenCodec(ring, lifetime=timedelta(minutes=5)),
                uow=database.unit_of_work,
                clock=self.clock,
            ),
            clock=self.clock,
            recheck=3600,
        )
        self.watches = TaskWatches(
            journal=self.tasks,
            sessions=self.sessions,
            heartbeat=0.2,
            queue_size=queue_size,
            poll=0.5,
        )
        self.caller: Caller | None = None

    async def seed(self) -> Caller:
        user = User("u1", "ada@example.com", "Ada", "$argon2id$x", T0, T0)
        async with self.database.unit_of_work() as uow:
            await uow.users.add(user)
            await uow.workspaces.add(
                Workspace(id="w1", display_name="W", create_time=T0, update_time=T0)
            )
            await uow.workspaces.add_member(Membership("w1", "u1", Role.OWNER, T0))
            await uow.commit()
        self.caller = Caller(
            user=user, session_id="s1", token_expire_time=datetime.now(UTC) + timedelta(hours=1)
        )
        return self.caller

    async def create(self) -> Task:
        assert self.caller is not None
        return await self.tasks.create(self.caller, "w1", "echo", {"text": "hi"})

    async def append(self, task_id: str, *drafts: JournalDraft) -> int:
        """Journal ``drafts`` as the runner would, and announce them; the last sequence."""
        async with self.database.unit_of_work() as uow:
            entries = await uow.tasks.journal(task_id, drafts, self.clock.now(), fence=None)
            await uow.commit()
        await self.signals.journal_appended(task_id, entries[-1].sequence)
        return entries[-1].sequence

    async def watch(self, task: Task, after: int = 0) -> TaskWatch:
        assert self.caller is not None
        return await self.watches.open(self.caller, "w1", task.id, after)


def delta(text: str) -> JournalDraft:
    return JournalDraft(JournalKind.OUTPUT_DELTA, 1, text)


async def frames(watch: TaskWatch, count: int, within: float = 10) -> list[object]:
    """The next ``count`` items that are not heartbeats."""
    got: list[object] = []
    async with asyncio.timeout(within):
        while len(got) < count:
            item = await anext(watch)
            if not isinstance(item, Heartbeat):
                got.append(item)
    return got


async def rest(watch: TaskWatch, within: float = 10) -> list[object]:
    """Everything until the watch ends by itself (heartbeats left out)."""
    got: list[object] = []
    async with asyncio.timeout(within):
        async for item in watch:
            if not isinstance(item, Heartbeat):
                got.append(item)
    return got


@pytest.fixture
async def world(database: SqlDatabase, tmp_path: Path) -> AsyncIterator[World]:
    made = World(database, tmp_path)
    await made.seed()
    try:
        yield made
    finally:
        await made.watches.aclose()


async def test_a_watch_from_zero_starts_with_the_task_then_goes_live_and_ends_after_the_terminal_frame(  # noqa: E501
    world: World,
) -> None:
    task = await world.create()
    async with await world.watch(task) as watch:
        (first,) = await frames(watch, 1)
        await world.append(task.id, delta("hel"), delta("lo"))
        live = await frames(watch, 2)
        assert world.caller is not None
        await world.tasks.cancel(world.caller, "w1", task.id)
        tail = await rest(watch)

    assert first.kind is JournalKind.TASK  # type: ignore[attr-defined]
    assert first.sequence == task.last_sequence  # type: ignore[attr-defined]
    assert [e.body for e in live] == ["hel", "lo"]  # type: ignore[attr-defined]
    assert [e.sequence for e in live] == [task.last_sequence + 1, task.last_sequence + 2]  # type: ignore[attr-defined]
    (last,) = tail
    assert last.body.state is TaskState.CANCELLED  # type: ignore[attr-defined]
    assert last.sequence == task.last_sequence + 3  # type: ignore[attr-defined]


async def test_resuming_replays_exactly_what_came_after_and_a_finished_task_then_closes(
    world: World,
) -> None:
    task = await world.create()
    progress = JournalDraft(JournalKind.PROGRESS, 1, Progress(0.5, "half"))
    end = await world.append(task.id, delta("a"), progress, delta("b"), delta("c"))
    assert world.caller is not None
    await world.tasks.cancel(world.caller, "w1", task.id)

    async with await world.watch(task, after=end - 2) as watch:
        replayed = await rest(watch)
    async with await world.watch(task, after=end + 1) as watch:  # the terminal one
        nothing = await rest(watch)

    assert [e.sequence for e in replayed] == [end - 1, end, end + 1]  # type: ignore[attr-defined]
    assert [e.kind for e in replayed] == [JournalKind.OUTPUT_DELTA] * 2 + [JournalKind.TASK]  # type: ignore[attr-defined]
    assert nothing == []


async def test_an_after_sequence_past_the_journal_or_negative_is_invalid(world: World) -> None:
    task = await world.create()
    for after in (task.last_sequence + 1, -1):
        with pytest.raises(errors.InvalidArgument) as caught:
            await world.watch(task, after)
        assert caught.value.violations[0].field == "after_sequence"


async def test_a_watch_of_a_task_in_no_workspace_of_the_caller_is_not_found(
    world: World,
) -> None:
    task = await world.create()
    assert world.caller is not None
    with pytest.raises(errors.NotFound) as caught:
        await world.watches.open(world.caller, "w-other", task.id, 0)
    assert caught.value.reason == "TASK_NOT_FOUND"


async def test_a_watcher_that_lets_its_queue_fill_is_ended_with_its_resume_point(
    database: SqlDatabase, tmp_path: Path
) -> None:
    world = World(database, tmp_path, queue_size=3)
    await world.seed()
    task = await world.create()
    try:
        async with await world.watch(task) as watch:
            (first,) = await frames(watch, 1)
            # Live now: the reader offers what comes to the bounded queue.
            await asyncio.sleep(0.1)
            for i in range(10):
                await world.append(task.id, delta(f"{i} "))
            await asyncio.sleep(0.5)  # the reader gets there; this watcher reads nothing
            with pytest.raises(errors.ResourceExhausted) as caught:
                await frames(watch, 20)
    finally:
        await world.watches.aclose()
    assert caught.value.reason == "SUBSCRIBER_TOO_SLOW"
    resume = int(caught.value.metadata["after_sequence"])
    assert resume >= first.sequence  # type: ignore[attr-defined]


async def test_close_all_ends_a_watch_with_the_last_sequence_it_yielded(world: World) -> None:
    task = await world.create()
    async with await world.watch(task) as watch:
        await frames(watch, 1)
        last = await world.append(task.id, delta("x"))
        await frames(watch, 1)
        told = world.watches.close_all(
            lambda after: errors.Unavailable("bye", metadata={"after_sequence": str(after)})
        )
        with pytest.raises(errors.Unavailable) as caught:
            await frames(watch, 1)
    assert told == 1
    assert caught.value.metadata["after_sequence"] == str(last)


async def test_a_revoked_session_ends_a_waiting_watch_at_once(world: World) -> None:
    task = await world.create()
    async with await world.watch(task) as watch:
        await frames(watch, 1)
        waiting = asyncio.ensure_future(frames(watch, 1))
        await asyncio.sleep(0.05)
        world.sessions.sessions_revoked(["s1"])
        with pytest.raises(errors.Unauthenticated) as caught:
            await asyncio.wait_for(waiting, 2)
    assert caught.value.reason == "SESSION_REVOKED"


async def test_heartbeats_keep_an_idle_watch_alive(world: World) -> None:
    task = await world.create()
    async with await world.watch(task) as watch:
        await frames(watch, 1)
        async with asyncio.timeout(2):
            beat = await anext(watch)
    assert isinstance(beat, Heartbeat)


async def test_a_pruned_journal_is_said_first_then_the_current_task_then_what_is_left(
    world: World,
) -> None:
    task = await world.create()
    end = await world.append(task.id, *(delta(str(i)) for i in range(5)))
    async with world.database.unit_of_work() as uow:  # what the cap does to a long journal
        from cortex_core.adapters.sql import tables

        await uow._conn.execute(  # type: ignore[attr-defined]
            tables.events.delete().where(
                tables.events.c.stream == f"task:{task.id}",
                tables.events.c.sequence <= end - 2,
            )
        )
        await uow.commit()
    async with await world.watch(task, after=1) as watch:
        got = await frames(watch, 4)
    pruned, stand_in, *kept = got
    assert isinstance(pruned, JournalPruned)
    assert pruned.oldest_sequence == end - 1
    assert stand_in.kind is JournalKind.TASK  # type: ignore[attr-defined]
    assert stand_in.sequence == end - 2  # type: ignore[attr-defined]
    assert [e.sequence for e in kept] == [end - 1, end]  # type: ignore[attr-defined]


async def test_a_watcher_removed_from_the_workspace_is_ended_at_the_next_heartbeat(
    world: World,
) -> None:
    task = await world.create()
    async with await world.watch(task) as watch:
        await frames(watch, 1)
        async with world.database.unit_of_work() as uow:
            await uow.workspaces.remove_member("w1", "u1")
            await uow.commit()
        with pytest.raises(errors.NotFound) as caught:
            async with asyncio.timeout(3):
                while True:
                    await anext(watch)
    assert caught.value.reason == "TASK_NOT_FOUND"
