"""The event log and the hub over it, on the in-process log and on Redis Streams.

Redis tests read ``CORTEX_TEST_REDIS_URL`` (skipped when unset, failed when ``CI=true``)
and use a unique key prefix each, deleted afterwards. The restart test starts its own
``redis-server`` (AOF, fsync always) on a free port, so it never touches the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as redis
from support.databases import require_env
from support.events import UPDATED, append

from cortex_core.adapters.memory_event_log import InMemoryEventLog
from cortex_core.adapters.redis.event_log import RedisEventLog
from cortex_core.domain.event_records import (
    EventEnvelope,
    EventKind,
    EventRecord,
    ReplayUnavailable,
    ResumeToken,
)
from cortex_core.errors import Unavailable
from cortex_core.ports import EventLog
from cortex_core.services.event_hub import EventHub, SubscriberTooSlow, Subscription

STREAM = "ws:w1"
NOW = datetime(2026, 1, 1, tzinfo=UTC)

LogFactory = Callable[..., EventLog]


@contextlib.asynccontextmanager
async def redis_prefix() -> AsyncIterator[tuple[str, str]]:
    """``(url, prefix)``: a prefix no other test uses; its keys are deleted afterwards."""
    url = require_env("CORTEX_TEST_REDIS_URL")
    prefix = f"cortex-test:{uuid.uuid4().hex}:"
    try:
        yield url, prefix
    finally:
        client = redis.Redis.from_url(url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def make_log(request: pytest.FixtureRequest) -> AsyncIterator[LogFactory]:
    """Builds logs on one backend; Redis logs made by one test share a prefix (replicas)."""
    logs: list[EventLog] = []
    async with contextlib.AsyncExitStack() as stack:
        if request.param == "memory":
            shared = InMemoryEventLog()

            def make(**options: object) -> EventLog:
                return InMemoryEventLog(**options) if options else shared  # type: ignore[arg-type]
        else:
            url, prefix = await stack.enter_async_context(redis_prefix())

            def make(**options: object) -> EventLog:
                options.setdefault("approximate_trim", False)
                log = RedisEventLog.from_url(url, prefix=prefix, **options)
                logs.append(log)
                return log

        yield make
        for log in logs:
            await log.close()


async def take(sub: Subscription, count: int, within: float = 10.0) -> list[EventRecord]:
    """The next ``count`` records (heartbeats skipped); fail after ``within`` seconds."""
    records: list[EventRecord] = []
    async with asyncio.timeout(within):
        async for item in sub:
            if isinstance(item, EventRecord):
                records.append(item)
                if len(records) == count:
                    break
    return records


async def publish_many(hub: EventHub, count: int, stream: str = STREAM) -> None:
    for i in range(count):
        await append(hub.log, stream, f"e{i}", b"%d" % i, NOW)


async def test_sequences_are_one_to_n_per_stream(make_log: LogFactory) -> None:
    log = make_log()
    first = [await append(log, STREAM, f"a{i}", b"x", NOW) for i in range(5)]
    other = await append(log, "ws:w2", "b", b"y", NOW)

    assert [r.sequence for r in first] == [1, 2, 3, 4, 5]
    assert other.sequence == 1
    read = await log.read(STREAM, 2, 10)
    assert [r.sequence for r in read.records] == [3, 4, 5]
    assert read.records[0] == first[2]
    assert (read.oldest_available, read.last_sequence) == (1, 5)


async def test_concurrent_appends_from_two_replicas_never_collide(make_log: LogFactory) -> None:
    replica_a, replica_b = make_log(), make_log()

    async def append_many(log: EventLog, name: str) -> list[int]:
        return [(await append(log, STREAM, f"{name}{i}", b"", NOW)).sequence for i in range(50)]

    got_a, got_b = await asyncio.gather(append_many(replica_a, "a"), append_many(replica_b, "b"))

    assert sorted(got_a + got_b) == list(range(1, 101))
    stored = await replica_a.read(STREAM, 0, 1000)
    assert [r.sequence for r in stored.records] == list(range(1, 101))


async def test_wait_wakes_up_on_an_append_to_a_watched_stream(make_log: LogFactory) -> None:
    log = make_log()
    await append(log, STREAM, "a", b"", NOW)
    waiter = asyncio.create_task(log.wait({STREAM: 1, "ws:other": 0}, 1.5))
    await asyncio.sleep(0.05)
    await append(make_log(), STREAM, "b", b"", NOW)

    assert await asyncio.wait_for(waiter, 2) == {STREAM}
    assert await log.wait({STREAM: 2}, 0.05) == set()


async def test_subscriber_receives_live_events_in_order(make_log: LogFactory) -> None:
    hub = EventHub(make_log())
    async with hub.subscribe({STREAM: None}, queue_size=64, heartbeat=5) as sub:
        await publish_many(hub, 10)
        records = await take(sub, 10)
    assert [r.sequence for r in records] == list(range(1, 11))
    assert [r.payload for r in records] == [b"%d" % i for i in range(10)]
    await hub.aclose()


async def test_resuming_after_each_disconnect_loses_and_repeats_nothing(
    make_log: LogFactory,
) -> None:
    hub = EventHub(make_log())
    total = 150

    async def publisher() -> None:
        for i in range(total):
            await append(hub.log, STREAM, f"e{i}", b"", NOW)
            await asyncio.sleep(0.002)

    task = asyncio.create_task(publisher())
    received: list[int] = []
    token = ResumeToken({STREAM: 0}).encode()
    rounds = 0
    while len(received) < total:
        rounds += 1
        positions = dict(ResumeToken.decode(token).positions)
        async with hub.subscribe(positions, queue_size=256, heartbeat=5) as sub:
            wanted = min(7 + rounds % 13, total - len(received))
            received += [r.sequence for r in await take(sub, wanted)]
            token = sub.resume_token
        await asyncio.sleep(0.005 * (rounds % 3))
    await task

    assert received == list(range(1, total + 1))
    assert rounds > 5
    await hub.aclose()


async def test_an_event_published_on_one_replica_reaches_subscribers_on_another() -> None:
    async with redis_prefix() as (url, prefix):
        log_a = RedisEventLog.from_url(url, prefix=prefix)
        log_b = RedisEventLog.from_url(url, prefix=prefix)
        hub_a, hub_b = EventHub(log_a), EventHub(log_b)
        async with hub_b.subscribe({STREAM: None}, queue_size=64, heartbeat=5) as sub:
            await publish_many(hub_a, 10)
            records = await take(sub, 10, within=5)
        assert [r.sequence for r in records] == list(range(1, 11))
        for hub in (hub_a, hub_b):
            await hub.aclose()
            await hub.log.close()


async def test_a_position_older_than_retention_is_reported_first_then_replayed_from_the_oldest(
    make_log: LogFactory,
) -> None:
    hub = EventHub(make_log(max_length=5))
    await publish_many(hub, 20)

    async with hub.subscribe({STREAM: 2}, queue_size=64, heartbeat=5) as sub:
        first = await anext(sub)
        assert isinstance(first, ReplayUnavailable)
        assert (first.stream, first.requested_after) == (STREAM, 2)
        assert first.oldest_available > 3
        retained = await take(sub, 20 - first.oldest_available + 1)
        assert [r.sequence for r in retained] == list(range(first.oldest_available, 21))
        await append(hub.log, STREAM, "live", b"", NOW)
        assert [r.sequence for r in await take(sub, 1)] == [21]
        assert ResumeToken.decode(sub.resume_token).positions == {STREAM: 21}
    await hub.aclose()


async def test_a_slow_subscriber_is_ended_with_a_token_that_resumes_without_a_gap(
    make_log: LogFactory,
) -> None:
    hub = EventHub(make_log())
    async with (
        hub.subscribe({STREAM: None}, queue_size=8, heartbeat=5) as slow,
        hub.subscribe({STREAM: None}, queue_size=256, heartbeat=5) as fast,
    ):
        await publish_many(hub, 3)
        assert [r.sequence for r in await take(slow, 3)] == [1, 2, 3]
        fast_task = asyncio.create_task(take(fast, 100))
        await publish_many(hub, 97)
        assert [r.sequence for r in await fast_task] == list(range(1, 101))

        with pytest.raises(SubscriberTooSlow) as ended:
            await take(slow, 1)
        assert ended.value.reason == "SUBSCRIBER_TOO_SLOW"
        token = ended.value.metadata["resume_token"]
        assert ResumeToken.decode(token).positions == {STREAM: 3}

    positions = dict(ResumeToken.decode(token).positions)
    async with hub.subscribe(positions, queue_size=8, heartbeat=5) as again:
        assert [r.sequence for r in await take(again, 97)] == list(range(4, 101))
    assert hub.active_subscriptions == 0
    await hub.aclose()


# --- Redis restarting under a subscriber ------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A private redis-server whose data survives kill -9 (AOF, fsync always)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(10):
                while True:
                    with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()  # SIGKILL: no shutdown save, only the fsynced AOF survives
            await self.process.wait()


async def eventually(action: Callable[[], Awaitable[object]]) -> None:
    """Retry ``action`` while it raises Unavailable, for at most 10 s."""
    async with asyncio.timeout(10):
        while True:
            try:
                await action()
                return
            except Unavailable:
                await asyncio.sleep(0.1)


async def test_after_redis_restarts_resuming_with_the_token_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    require_env("CORTEX_TEST_REDIS_URL")
    server = OwnRedis(tmp_path)
    await server.start()
    log = RedisEventLog.from_url(server.url, command_timeout=1.0, backoff_cap=0.3)
    hub = EventHub(log, poll_interval=0.5)
    received: list[int] = []
    try:
        async with hub.subscribe({STREAM: 0}, queue_size=64, heartbeat=0.3) as sub:
            await publish_many(hub, 10)
            received += [r.sequence for r in await take(sub, 5)]
            token = sub.resume_token
            await server.kill()
            # While Redis is down the subscriber may still see buffered events or
            # heartbeats, but it ends with Unavailable (and its token) instead of hanging.
            with pytest.raises(Unavailable) as down:
                async with asyncio.timeout(5):
                    async for item in sub:
                        if isinstance(item, EventRecord):
                            received.append(item.sequence)
                        token = sub.resume_token
            assert down.value.reason == "EVENT_LOG_UNAVAILABLE"
            assert down.value.metadata["resume_token"] == token
        with pytest.raises(Unavailable):
            await append(hub.log, STREAM, "lost", b"", NOW)

        await server.start()
        await eventually(lambda: publish_many(hub, 10))

        async def resume() -> None:
            positions = dict(ResumeToken.decode(token).positions)
            async with hub.subscribe(positions, queue_size=64, heartbeat=5) as again:
                received.extend(r.sequence for r in await take(again, 20 - len(received)))

        await eventually(resume)
        assert received == list(range(1, 21))
    finally:
        await hub.aclose()
        await log.close()
        await server.kill()


async def test_a_position_out_of_range_is_refused_before_it_reaches_the_log(
    make_log: LogFactory,
) -> None:
    log = make_log()
    await append(log, STREAM, "a", b"", NOW)
    for after in (-1, 2**63, 2**64 + 5):
        with pytest.raises(ValueError, match="out of range"):
            await log.read(STREAM, after, 10)
    assert [r.event_id for r in (await log.read(STREAM, 0, 10)).records] == ["a"]


async def test_a_command_redis_refuses_is_not_taken_for_an_outage() -> None:
    async with redis_prefix() as (url, prefix):
        log = RedisEventLog.from_url(url, prefix=prefix)
        try:
            await append(log, STREAM, "a", b"", NOW)
            with pytest.raises(Unavailable):
                await log.wait({STREAM: -5}, 0.1)  # "-5-0" is no stream id: an error reply
            # No fail-fast backoff: Redis itself is fine, so the next call goes through.
            assert [r.event_id for r in (await log.read(STREAM, 0, 10)).records] == ["a"]
        finally:
            await log.close()


async def test_a_record_keeps_its_envelope(make_log: LogFactory) -> None:
    log = make_log()
    envelope = EventEnvelope(EventKind.SESSION_REVOKED, "", "", "u1", "s1")
    other = EventEnvelope(EventKind.MESSAGE_CREATED, "w1", "c1")
    await append(log, STREAM, "a", b"\x00payload", NOW, envelope)
    await append(log, STREAM, "b", b"", NOW, other)
    read = await log.read(STREAM, 0, 10)
    assert [(r.envelope, r.payload) for r in read.records] == [
        (envelope, b"\x00payload"),
        (other, b""),
    ]


async def test_a_stored_event_is_taken_once_and_only_right_after_the_one_before(
    make_log: LogFactory,
) -> None:
    log = make_log()
    assert isinstance(log, InMemoryEventLog | RedisEventLog)

    def stored(sequence: int) -> EventRecord:
        return EventRecord("ws:once", sequence, f"e{sequence}", NOW, UPDATED, b"%d" % sequence)

    assert (await log.append_once(stored(2))).behind == 0  # the first is not in yet
    first = await log.append_once(stored(1))
    assert first.record is not None
    assert first.record.sequence == 1
    repeat = await log.append_once(stored(1))  # a crash before the acknowledgement
    assert repeat.record is None
    assert repeat.behind is None
    assert (await log.append_once(stored(2))).record is not None
    # Events 3 and 4 were acknowledged, then the log lost them: 5 goes in after the gap.
    assert (await log.append_once(stored(5))).behind == 2
    after_gap = await log.append_once(stored(5), after_gap=True)
    assert after_gap.record is not None
    assert after_gap.record.sequence == 3
    read = await log.read("ws:once", 0, 10)
    assert [r.event_id for r in read.records] == ["e1", "e2", "e5"]
