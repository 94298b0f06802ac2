"""Committed changes reach the event log in order, even across a log outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from cortex_core import errors
from cortex_core.adapters.memory_event_log import InMemoryEventLog
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.domain.events import WorkspaceDeleted
from cortex_core.services.event_hub import EventHub
from cortex_core.services.event_relay import EventRelay

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FlakyLog(InMemoryEventLog):
    """An in-process log that can be switched off like a Redis outage."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            raise errors.Unavailable("down", reason="EVENT_LOG_UNAVAILABLE")
        return await super().append(*args, **kwargs)


def _change(n: int) -> WorkspaceDeleted:
    return WorkspaceDeleted(actor_id="u", time=NOW, deleted_workspace_id="w")


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[SqlDatabase]:
    db = SqlDatabase.from_url(db_url)
    await db.migrate()
    yield db
    await db.dispose()


async def test_events_kept_during_an_outage_are_appended_in_order_after_it(
    database: SqlDatabase,
) -> None:
    log = FlakyLog()
    counter = iter(range(1000))

    def encode(change: Any, event_id: str) -> bytes:
        return str(next(counter)).encode()

    relay = EventRelay(
        log=log, hub=EventHub(log), uow=database.unit_of_work, encode=encode, retry_interval=0.05
    )
    task = asyncio.create_task(relay.run())
    try:
        await relay.publish(_change(0))
        log.down = True
        for n in range(1, 4):
            await relay.publish(_change(n))  # never raises: kept in the outbox
        log.down = False
        await relay.publish(_change(4))  # must queue behind the kept ones
        async with asyncio.timeout(10):
            while True:
                read = await log.read("ws:w", 0, 100)
                if len(read.records) == 5:
                    break
                await asyncio.sleep(0.02)
        assert [r.payload for r in read.records] == [b"0", b"1", b"2", b"3", b"4"]
        await relay.publish(_change(5))
        async with asyncio.timeout(10):
            while len((await log.read("ws:w", 0, 100)).records) < 6:
                await asyncio.sleep(0.02)
        async with database.unit_of_work() as uow:
            assert await uow.outbox.head(10) == []
        read = await log.read("ws:w", 0, 100)
        assert [r.payload for r in read.records] == [str(n).encode() for n in range(6)]
        assert {r.envelope for r in read.records} == {_change(0).envelope}  # kept in the outbox
    finally:
        task.cancel()
        await asyncio.wait((task,))


async def test_one_drain_pass_moves_the_kept_events_and_says_how_many(
    database: SqlDatabase,
) -> None:
    log = FlakyLog()
    relay = EventRelay(
        log=log, hub=EventHub(log), uow=database.unit_of_work, encode=lambda c, i: i.encode()
    )
    log.down = True
    for n in range(3):
        await relay.publish(_change(n))
    with pytest.raises(errors.Unavailable):
        await relay.drain_once()  # a supervisor backs off and calls again
    assert relay.backlog
    log.down = False
    assert await relay.drain_once() == 3
    assert not relay.backlog
    assert len((await log.read("ws:w", 0, 10)).records) == 3
    async with database.unit_of_work() as uow:
        assert await uow.outbox.head(10) == []
