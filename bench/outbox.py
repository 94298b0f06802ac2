"""The write path with the event in the transaction, against publish-after-commit, in one run.

The use cases run in this process over the real storage (``SqlDatabase``: a
SQLite file by default, PostgreSQL with ``--database-url``) and the real event
log of that deployment (the event store itself without Redis; Redis Streams with
``--redis-url``), with the real ``EventRelay``, hub and payload encoder:

* **outbox** (what the server runs): ``EventBus.commit`` writes the event in the
  use case's transaction (one upsert per stream and one insert), commits, then the
  relay's fast path hands it to the hub (and, with Redis, appends it once;
  acknowledgements are written by the relay loop, running here as in a server);
* **after commit** (the path before issue 16, kept here for the baseline only):
  the same use case commits without the event, and an event-bus handler appends it
  to the log afterwards, as ``EventRelay.publish`` did: an in-process log without
  Redis (what ``make run`` had: nothing survived a restart), Redis with it.

Without Redis a third path, **after, stored**, appends after the commit into the
event store (a transaction of its own): what durable events cost without the outbox.

Each operation is one ``UpdateWorkspace`` or one ``CreateMemory`` use case
(alternating), ``--concurrency`` at a time, ``--ops`` per round; rounds run the paths
in alternating order and the best round of each is kept. Reported: operations/s of each
and the ratio of their per-operation cost (the goal is at most 1.1x).

    python -m bench.outbox [--ops 400] [--rounds 3] [--concurrency 8]
                           [--database-url URL] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvloop

from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.memory_event_log import InMemoryEventLog
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.sql.event_log import SqlEventLog
from cortex_core.api.event_encoding import encode
from cortex_core.domain.events import Change
from cortex_core.domain.identity import Caller, Membership, Role, User, Workspace, new_id
from cortex_core.domain.memories import MemoryKind
from cortex_core.ports import EventLog
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.event_hub import EventHub
from cortex_core.services.event_relay import EventRelay
from cortex_core.services.memories import Memories
from cortex_core.services.workspaces import Workspaces

Operation = Callable[[int], Awaitable[None]]


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[SqlDatabase]:
    with tempfile.TemporaryDirectory() as directory:
        database = SqlDatabase.from_url(url or f"sqlite+aiosqlite:///{Path(directory) / 'b.db'}")
        await database.migrate()
        try:
            yield database
        finally:
            await database.dispose()


async def _caller(database: SqlDatabase) -> tuple[Caller, list[str]]:
    now = datetime.now(UTC)
    user = User(new_id(), f"{uuid.uuid4().hex[:8]}@bench.example", "B", "x", now, now)
    workspaces = [new_id() for _ in range(8)]
    async with database.unit_of_work() as uow:
        await uow.users.add(user)
        for workspace_id in workspaces:
            await uow.workspaces.add(Workspace(workspace_id, "w", now, now))
            await uow.workspaces.add_member(Membership(workspace_id, user.id, Role.OWNER, now))
        await uow.commit()
    return Caller(user, new_id(), now + timedelta(days=1)), workspaces


def _use_cases(
    database: SqlDatabase, bus: EventBus, caller: Caller, spaces: list[str]
) -> Operation:
    clock = SystemClock()
    workspaces = Workspaces(uow=database.unit_of_work, clock=clock, events=bus)
    memories = Memories(uow=database.unit_of_work, clock=clock, events=bus)

    async def operation(n: int) -> None:
        workspace_id = spaces[n % len(spaces)]
        if n % 2:
            await workspaces.update(
                caller, workspace_id, display_name=f"n{n}", description="", fields=["display_name"]
            )
        else:
            await memories.create(
                caller,
                workspace_id,
                content=f"bench memory {n}",
                kind=MemoryKind.FACT,
                ttl=None,
                source_messages=(),
            )

    return operation


def _after_commit(log: EventLog, hub: EventHub) -> EventBus:
    """The path before issue 16: an event-bus handler appends after the commit."""
    bus = EventBus()

    async def publish(change: Change) -> None:
        event_id = new_id()
        record = await log.append(
            change.stream, event_id, change.envelope, encode(change, event_id), change.time
        )
        hub.published(record)

    bus.subscribe(Change, publish)
    return bus


async def _round(operation: Operation, ops: int, concurrency: int) -> float:
    counter = iter(range(ops))

    async def worker() -> None:
        for n in counter:
            await operation(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ops / (time.perf_counter() - started)


def _redis_log(url: str) -> Any:
    from cortex_core.adapters.redis.event_log import RedisEventLog

    return RedisEventLog.from_url(url, prefix=f"cortex-bench:{uuid.uuid4().hex}:")


async def main(args: argparse.Namespace) -> None:
    async with _database(args.database_url) as database:
        caller, spaces = await _caller(database)
        if args.redis_url:
            shared = _redis_log(args.redis_url)
            new_log: EventLog = shared
            old_log: EventLog = shared
            external = True
        else:
            new_log = SqlEventLog(database.unit_of_work)
            old_log = InMemoryEventLog()
            external = False
        new_hub, old_hub = EventHub(new_log), EventHub(old_log)
        relay = EventRelay(
            log=new_log, hub=new_hub, uow=database.unit_of_work, encode=encode, external=external
        )
        relay_loop = asyncio.create_task(relay.run())  # the supervised loop of a server
        paths = {
            "outbox": _use_cases(database, EventBus(relay), caller, spaces),
            "after commit": _use_cases(database, _after_commit(old_log, old_hub), caller, spaces),
        }
        if not external:
            # What durable events would cost without the outbox: the same append after
            # the commit, into the event store (a transaction of its own).
            stored = SqlEventLog(database.unit_of_work)
            paths["after, stored"] = _use_cases(
                database, _after_commit(stored, EventHub(stored)), caller, spaces
            )
        try:
            await _round(paths["outbox"], min(args.ops, 50), args.concurrency)  # warm up
            best = dict.fromkeys(paths, 0.0)
            for round_ in range(args.rounds):
                order = list(paths.items())
                for name, operation in order if round_ % 2 == 0 else reversed(order):
                    best[name] = max(
                        best[name], await _round(operation, args.ops, args.concurrency)
                    )
        finally:
            relay_loop.cancel()
            await asyncio.gather(relay_loop, return_exceptions=True)
            await new_log.close()
            if old_log is not new_log:
                await old_log.close()
    backend = "PostgreSQL" if args.database_url.startswith("postgresql") else "SQLite"
    log_name = "Redis" if args.redis_url else "event store (after commit: in-process log)"
    print(f"bench.outbox  {backend}, log: {log_name}, concurrency {args.concurrency}")
    for name, rate in best.items():
        print(f"  {name:<13} {rate:8.0f} writes/s (best of {args.rounds} rounds of {args.ops})")
    ratio = best["after commit"] / best["outbox"]
    print(f"  cost per write, outbox / after commit: {ratio:.2f}x (goal <= 1.10x)")
    if "after, stored" in best:
        durable = best["after, stored"] / best["outbox"]
        print(f"  cost per write, outbox / after commit into the event store: {durable:.2f}x")


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ops", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(main(_arguments(sys.argv[1:])))
