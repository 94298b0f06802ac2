"""Every committed change has exactly one event: written in its transaction, relayed
to the log in stored order once, whatever fails in between."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from support.tasks import FAST, TEST_EXPERTS, seed
from support.tool_sources import RecordingTools

from cortex_core import errors
from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.adapters.memory_event_log import InMemoryEventLog
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.sql.event_log import SqlEventLog
from cortex_core.adapters.task_signals import LocalTaskSignals
from cortex_core.adapters.token_counter import EstimatedTokenCounter
from cortex_core.domain.events import WorkspaceDeleted
from cortex_core.domain.paging import PageRequest
from cortex_core.domain.tasks import TaskState
from cortex_core.ports import RelayedLog
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.event_hub import EventHub
from cortex_core.services.event_relay import EventRelay
from cortex_core.services.experts import ExpertCatalog
from cortex_core.services.task_runner import TaskRunner
from cortex_core.services.tasks import Tasks
from cortex_core.services.tool_invoker import ToolInvoker

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyLog(InMemoryEventLog):
    """An in-process log that can be switched off like a Redis outage."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append_once(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise errors.Unavailable("down", reason="EVENT_LOG_UNAVAILABLE")
        return await super().append_once(*args, **kwargs)


def _change() -> WorkspaceDeleted:
    return WorkspaceDeleted(actor_id="u", time=NOW, deleted_workspace_id="w")


def _counting_encode() -> Any:
    counter = iter(range(1000))
    return lambda change, event_id: str(next(counter)).encode()


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[SqlDatabase]:
    db = SqlDatabase.from_url(db_url)
    await db.migrate()
    yield db
    await db.dispose()


def _relay(database: SqlDatabase, log: RelayedLog, encode: Any = None) -> EventRelay:
    return EventRelay(
        log=log,
        hub=EventHub(log),
        uow=database.unit_of_work,
        encode=encode or _counting_encode(),
        retry_interval=0.05,
    )


async def _commit(bus: EventBus, database: SqlDatabase, count: int = 1) -> None:
    for _ in range(count):
        async with database.unit_of_work() as uow:
            await bus.commit(uow, [_change()])


async def test_a_change_that_rolls_back_has_no_event_and_one_that_commits_has_one(
    database: SqlDatabase,
) -> None:
    log = SqlEventLog(database.unit_of_work)
    relay = EventRelay(
        log=log, hub=EventHub(log), uow=database.unit_of_work, encode=lambda c, i: b"x",
        external=False,
    )  # fmt: skip
    bus = EventBus(relay)
    with pytest.raises(RuntimeError):
        async with database.unit_of_work() as uow:
            await relay.stage(uow, [_change()])
            raise RuntimeError("the use case failed before its commit")
    assert (await log.read("ws:w", 0, 10)).records == ()
    await _commit(bus, database)
    read = await log.read("ws:w", 0, 10)
    assert [r.sequence for r in read.records] == [1]


async def test_events_committed_while_the_log_is_down_reach_it_in_order_after(
    database: SqlDatabase,
) -> None:
    log = FlakyLog()
    relay = _relay(database, log)
    bus = EventBus(relay)
    assert await relay.drain_once() == 0
    await _commit(bus, database)
    log.down = True
    await _commit(bus, database, 3)  # never raises: the events wait in the store
    assert relay.backlog
    with pytest.raises(errors.Unavailable):
        await relay.drain_once()  # a supervisor backs off and calls again
    log.down = False
    await _commit(bus, database)  # waits behind the kept ones
    assert await relay.drain_once() == 4
    assert not relay.backlog
    read = await log.read("ws:w", 0, 100)
    assert [r.payload for r in read.records] == [str(n).encode() for n in range(5)]
    async with database.unit_of_work() as uow:
        assert await uow.outbox.pending(10) == []


async def test_a_crash_between_append_and_acknowledgement_appends_nothing_twice(
    database: SqlDatabase,
) -> None:
    log = FlakyLog()
    first = _relay(database, log)
    await first.drain_once()
    await _commit(EventBus(first), database, 3)  # appended by the fast path, not acknowledged
    async with database.unit_of_work() as uow:
        assert len(await uow.outbox.pending(10)) == 3
    # The process dies here; another (or the restarted one) relays what is pending.
    second = _relay(database, log)
    assert await second.drain_once() == 3
    read = await log.read("ws:w", 0, 100)
    assert [r.sequence for r in read.records] == [1, 2, 3]
    async with database.unit_of_work() as uow:
        assert await uow.outbox.pending(10) == []


async def test_two_relays_over_one_store_append_each_event_once_in_order(
    database: SqlDatabase,
) -> None:
    log = FlakyLog()
    log.down = True
    writer = _relay(database, log)
    await _commit(EventBus(writer), database, 40)  # all pending
    log.down = False
    relays = [_relay(database, log) for _ in range(3)]
    await asyncio.gather(*(r.drain_once() for r in relays))
    read = await log.read("ws:w", 0, 100)
    assert [r.payload for r in read.records] == [str(n).encode() for n in range(40)]


class ProcessDied(Exception):
    """What the fault hook raises: the process stopped right after a commit."""


class DiesAfterCommit:
    """A unit-of-work factory over ``database`` with a test-only fault: while
    ``armed``, the next commit goes through and then "the process dies" (nothing
    after the commit in the use case runs: no publish, no wake-up)."""

    def __init__(self, database: SqlDatabase) -> None:
        self._database = database
        self.armed = False

    def __call__(self) -> Any:
        return _DyingUnitOfWork(self._database.unit_of_work(), self)


class _DyingUnitOfWork:
    def __init__(self, uow: Any, fault: DiesAfterCommit) -> None:
        self._uow = uow
        self._fault = fault

    def __getattr__(self, name: str) -> Any:
        return getattr(self._uow, name)

    async def __aenter__(self) -> _DyingUnitOfWork:
        await self._uow.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._uow.__aexit__(*exc)

    async def commit(self) -> None:
        await self._uow.commit()
        if self._fault.armed:
            self._fault.armed = False
            raise ProcessDied


def _task_encode(change: Any, event_id: str) -> bytes:
    return f"{change.task.id} {change.task.state.value}".encode()


@pytest.mark.parametrize("external", [False, True], ids=["store-is-log", "relayed"])
async def test_task_changes_committed_by_a_process_that_died_right_after_have_their_events_once(
    database: SqlDatabase, external: bool
) -> None:
    caller = await seed(database)
    fault = DiesAfterCommit(database)
    log: RelayedLog = FlakyLog() if external else SqlEventLog(database.unit_of_work)  # type: ignore[assignment]

    def relay() -> EventRelay:  # one per "process" over the same store and log
        return EventRelay(
            log=log, hub=EventHub(log), uow=database.unit_of_work, encode=_task_encode,
            external=external, retry_interval=0.05,
        )  # fmt: skip

    bus, signals = EventBus(relay()), LocalTaskSignals()
    providers = {e.id: LocalDevelopmentProvider() for e in TEST_EXPERTS}
    catalog = ExpertCatalog(TEST_EXPERTS, providers)
    tasks = Tasks(
        uow=fault, clock=SystemClock(), events=bus, signals=signals, experts=catalog,
        max_queued=100,
    )  # fmt: skip
    runner = TaskRunner(
        uow=fault, clock=SystemClock(), events=bus, signals=signals, experts=catalog,
        invoker=ToolInvoker([RecordingTools()]), counter=EstimatedTokenCounter(),
        worker_id="doomed", policy=FAST,
    )  # fmt: skip
    fault.armed = True
    with pytest.raises(ProcessDied):
        await tasks.create(caller, "w1", "echo", {"text": "hi"})
    claimed = (await tasks.list(caller, "w1", PageRequest(10))).items[0]
    fault.armed = True
    with pytest.raises(ProcessDied):
        await asyncio.wait_for(runner.run(), 10)  # dies right after its claim commits
    assert (await tasks.get(caller, "w1", claimed.id)).state is TaskState.RUNNING
    cancelled = await tasks.create(caller, "w1", "echo", {"text": "never mind"})
    fault.armed = True
    with pytest.raises(ProcessDied):
        await tasks.cancel(caller, "w1", cancelled.id)
    assert (await tasks.get(caller, "w1", cancelled.id)).state is TaskState.CANCELLED
    # The restarted process relays what the dead one committed.
    await relay().drain_once()
    read = await log.read("ws:w1", 0, 100)
    assert [r.payload.decode() for r in read.records] == [
        f"{claimed.id} queued",
        f"{claimed.id} running",
        f"{cancelled.id} queued",
        f"{cancelled.id} cancelled",
    ]
