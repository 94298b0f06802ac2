"""The event hub on the in-process log: tokens, heartbeats, stream changes and cleanup."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from cortex.events.v1 import event_pb2
from support.events import UPDATED, append

from cortex_core.adapters.memory_event_log import InMemoryEventLog
from cortex_core.api.event_service import _Decoded
from cortex_core.domain.event_records import (
    EventEnvelope,
    EventKind,
    EventRecord,
    Heartbeat,
    ReplayUnavailable,
    ResumeToken,
    encode_positions,
)
from cortex_core.errors import InvalidArgument, Unauthenticated, Unavailable
from cortex_core.services.event_hub import EventHub, SubscriberTooSlow, Subscription

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WS = "ws:w1"


def hub_tasks() -> list[str]:
    return sorted(
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("cortex-events") and not task.done()
    )


async def next_record(sub: Subscription) -> EventRecord:
    async with asyncio.timeout(5):
        async for item in sub:
            if isinstance(item, EventRecord):
                return item
    raise AssertionError("the subscription ended")


@pytest.fixture
async def hub() -> EventHub:
    return EventHub(InMemoryEventLog())


def test_a_resume_token_round_trips_and_is_url_safe() -> None:
    token = ResumeToken({"ws:a/b": 7, "user:u1": 0}).encode()
    assert token.startswith("v1.")
    assert set(token[3:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert ResumeToken.decode(token).positions == {"ws:a/b": 7, "user:u1": 0}


@pytest.mark.parametrize(
    "token",
    ["", "v1.", "v2.e30", "v1.!!!", "v1.W10", "v1.eyJhIjotMX0", "v1.eyJhIjp0cnVlfQ", "e30"],
)
def test_a_malformed_resume_token_is_an_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        ResumeToken.decode(token)
    assert error.value.reason == "INVALID_RESUME_TOKEN"
    assert [v.field for v in error.value.violations] == ["resume_token"]


async def test_live_only_subscription_starts_after_the_current_last_event(hub: EventHub) -> None:
    await append(hub.log, WS, "old", b"", NOW)
    async with hub.subscribe({WS: None}, queue_size=8, heartbeat=5) as sub:
        assert ResumeToken.decode(sub.resume_token).positions == {WS: 1}
        await append(hub.log, WS, "new", b"", NOW)
        assert (await next_record(sub)).event_id == "new"


async def test_a_heartbeat_after_quiet_carries_the_current_token(hub: EventHub) -> None:
    async with hub.subscribe({WS: None}, queue_size=8, heartbeat=0.2) as sub:
        await append(hub.log, WS, "a", b"", NOW)
        await append(hub.log, WS, "b", b"", NOW)
        assert [(await next_record(sub)).sequence for _ in range(2)] == [1, 2]
        loop = asyncio.get_running_loop()
        started = loop.time()
        item = await anext(sub)
        assert isinstance(item, Heartbeat)
        assert loop.time() - started >= 0.15
        assert item.resume_token == sub.resume_token
        assert ResumeToken.decode(item.resume_token).positions == {WS: 2}


async def test_subscribers_of_one_stream_share_one_reader_task(hub: EventHub) -> None:
    async with (
        hub.subscribe({WS: None}, queue_size=8, heartbeat=5) as first,
        hub.subscribe({WS: None, "user:u1": None}, queue_size=8, heartbeat=5) as second,
    ):
        assert hub_tasks() == [
            "cortex-events-reader:user:u1",
            "cortex-events-reader:ws:w1",
            "cortex-events-watch",
        ]
        await append(hub.log, WS, "a", b"", NOW)
        assert (await next_record(first)).sequence == 1
        assert (await next_record(second)).sequence == 1
    assert hub.active_subscriptions == 0
    assert hub.active_streams == 0
    assert hub_tasks() == []


async def test_a_removed_stream_yields_nothing_more_and_leaves_the_token(hub: EventHub) -> None:
    other = "ws:w2"
    async with hub.subscribe({WS: 0, other: 0}, queue_size=16, heartbeat=5) as sub:
        await append(hub.log, WS, "a", b"", NOW)
        await append(hub.log, other, "b", b"", NOW)
        await asyncio.sleep(0.05)  # both are queued or replayable now
        sub.remove_stream(other)
        await append(hub.log, other, "c", b"", NOW)
        await append(hub.log, WS, "d", b"", NOW)
        got = [await next_record(sub) for _ in range(2)]
        assert [(r.stream, r.event_id) for r in got] == [(WS, "a"), (WS, "d")]
        assert ResumeToken.decode(sub.resume_token).positions == {WS: 2}
        assert hub.active_streams == 1


async def test_closing_with_an_error_ends_the_iterator_with_it(hub: EventHub) -> None:
    async with hub.subscribe({WS: None}, queue_size=8, heartbeat=5) as sub:
        reader = asyncio.create_task(next_record(sub))
        await asyncio.sleep(0.01)
        sub.close(Unauthenticated("session revoked", reason="SESSION_REVOKED"))
        with pytest.raises(Unauthenticated):
            await reader
        assert hub_tasks() == []
    assert hub.active_subscriptions == 0


async def test_a_stream_added_later_replays_from_its_position(hub: EventHub) -> None:
    await append(hub.log, "user:u1", "s1", b"", NOW)
    async with hub.subscribe({WS: None}, queue_size=8, heartbeat=5) as sub:
        await sub.add_stream("user:u1", 0)
        assert (await next_record(sub)).event_id == "s1"
        assert sub.streams == {WS, "user:u1"}


async def test_retention_by_age_is_reported_as_replay_unavailable() -> None:
    hub = EventHub(InMemoryEventLog(max_age=timedelta(minutes=1)))
    await append(hub.log, WS, "old", b"", NOW)
    await append(hub.log, WS, "new", b"", NOW + timedelta(minutes=2))
    async with hub.subscribe({WS: 0}, queue_size=8, heartbeat=5) as sub:
        assert await anext(sub) == ReplayUnavailable(WS, 0, 2)
        assert (await next_record(sub)).event_id == "new"


async def test_cancelled_and_closed_subscriptions_leave_nothing_behind(hub: EventHub) -> None:
    async def consume(stream: str) -> None:
        async with hub.subscribe({stream: 0}, queue_size=4, heartbeat=0.05) as sub:
            async for _ in sub:
                pass

    tasks = [asyncio.create_task(consume(f"ws:{i % 3}")) for i in range(9)]
    for i in range(30):
        await append(hub.log, f"ws:{i % 3}", f"e{i}", b"", NOW)
    await asyncio.sleep(0.1)
    assert hub.active_subscriptions == 9
    assert len(hub_tasks()) == 4  # three readers and the watcher
    for task in tasks[:5]:
        task.cancel()
    await hub.aclose()  # ends the others' iterators
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(r, asyncio.CancelledError) for r in results[:5])
    assert results[5:] == [None] * 4
    assert hub.active_subscriptions == 0
    assert hub.active_streams == 0
    assert hub_tasks() == []


async def test_a_closed_log_makes_new_subscriptions_unavailable() -> None:
    log = InMemoryEventLog()
    await log.close()
    with pytest.raises(Unavailable) as error:
        async with EventHub(log).subscribe({WS: None}, queue_size=8, heartbeat=5):
            pass
    assert error.value.reason == "EVENT_LOG_UNAVAILABLE"


@pytest.mark.parametrize(
    "positions", [{}, {"ws:w1": 12}, {"ws:b": 1, "user:a": 0, 'ws:"é/\\': 99, "ws:a": 10**12}]
)
def test_a_resume_token_is_sorted_compact_json_in_url_safe_base64(
    positions: dict[str, int],
) -> None:
    raw = json.dumps(dict(sorted(positions.items())), separators=(",", ":")).encode()
    expected = "v1." + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert ResumeToken(positions).encode() == expected
    assert encode_positions(positions) == expected


async def test_heartbeats_of_many_subscribers_come_after_their_own_quiet_time(
    hub: EventHub,
) -> None:
    loop = asyncio.get_running_loop()

    async def first_heartbeat(sub: Subscription) -> tuple[float, float]:
        started = loop.time()
        async with asyncio.timeout(5):
            async for item in sub:
                if isinstance(item, Heartbeat):
                    return started, loop.time()
        raise AssertionError("the subscription ended")

    async with (
        hub.subscribe({WS: None}, queue_size=8, heartbeat=0.3) as slow,
        hub.subscribe({WS: None}, queue_size=8, heartbeat=0.1) as fast,
    ):
        beats = [asyncio.create_task(first_heartbeat(sub)) for sub in (slow, fast)]
        await asyncio.sleep(0.05)
        await append(hub.log, WS, "a", b"", NOW)  # moves both subscribers' quiet time on
        (slow_start, slow_beat), (fast_start, fast_beat) = await asyncio.gather(*beats)
        assert fast_beat - fast_start >= 0.14
        assert slow_beat - slow_start >= 0.34
        assert fast_beat < slow_beat
        assert ResumeToken.decode(slow.resume_token).positions == {WS: 1}


async def test_a_busy_subscriber_gets_no_heartbeat(hub: EventHub) -> None:
    async with hub.subscribe({WS: None}, queue_size=64, heartbeat=0.1) as sub:
        for i in range(12):
            await append(hub.log, WS, f"e{i}", b"", NOW)
            assert (await anext(sub)).event_id == f"e{i}"  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
        assert isinstance(await anext(sub), Heartbeat)


async def test_a_drained_subscription_holds_no_queue_and_tracks_its_token(hub: EventHub) -> None:
    async with hub.subscribe({WS: None, "user:u1": 0}, queue_size=8, heartbeat=5) as sub:
        await append(hub.log, WS, "a", b"", NOW)
        assert (await next_record(sub)).event_id == "a"
        assert sub._queue is None
        assert sub._pending is None
        assert ResumeToken.decode(sub.resume_token).positions == {WS: 1, "user:u1": 0}
        sub.remove_stream("user:u1")
        assert ResumeToken.decode(sub.resume_token).positions == {WS: 1}
    assert hub._beats == []


async def test_a_full_queue_counts_every_undelivered_record(hub: EventHub) -> None:
    async with hub.subscribe({WS: None}, queue_size=3, heartbeat=5) as sub:
        for i in range(3):
            await append(hub.log, WS, f"e{i}", b"", NOW)
        await asyncio.sleep(0.05)  # three queued: full, not over
        assert [(await next_record(sub)).event_id for _ in range(2)] == ["e0", "e1"]
        for i in range(3, 6):
            await append(hub.log, WS, f"e{i}", b"", NOW)
        await asyncio.sleep(0.05)  # e2 … e5: one too many
        with pytest.raises(SubscriberTooSlow) as error:
            await next_record(sub)
        assert ResumeToken.decode(error.value.resume_token).positions == {WS: 2}


async def test_subscribers_at_the_same_position_share_one_encoded_token(hub: EventHub) -> None:
    async with (
        hub.subscribe({WS: None, "user:u1": None}, queue_size=8, heartbeat=5) as first,
        hub.subscribe({"user:u1": None, WS: None}, queue_size=8, heartbeat=5) as second,
    ):
        await append(hub.log, WS, "a", b"", NOW)
        await next_record(first)
        await next_record(second)
        assert first.resume_token == second.resume_token
        assert ResumeToken.decode(first.resume_token).positions == {WS: 1, "user:u1": 0}


def test_subscribers_share_a_decoded_record_and_a_frame_per_token() -> None:
    event = event_pb2.Event(
        id="e1", workspace="workspaces/w1", type=event_pb2.EVENT_TYPE_WORKSPACE_UPDATED
    )
    event.workspace_updated.workspace.display_name = "renamed"
    record = EventRecord(WS, 7, "e1", NOW, UPDATED, event.SerializeToString())
    decoded = _Decoded(record)
    first = decoded.frame_for("v1.a")
    assert decoded.frame_for("v1.a") is first
    other = decoded.frame_for("v1.b")
    assert (first.event.sequence, first.event.resume_token) == (7, "v1.a")
    assert (other.event.sequence, other.event.resume_token) == (7, "v1.b")
    assert other.event.workspace_updated.workspace.display_name == "renamed"
    assert decoded.event.resume_token == ""  # the shared event is never changed


def _about(conversation_id: str) -> EventEnvelope:
    return EventEnvelope(EventKind.MESSAGE_CREATED, "w1", conversation_id)


def _in_c1(envelope: EventEnvelope) -> bool:
    return envelope.conversation_id == "c1"


async def test_a_filtered_subscriber_is_woken_only_for_what_it_accepts_and_still_advances(
    hub: EventHub,
) -> None:
    async with hub.subscribe({WS: None}, queue_size=1, heartbeat=0.2, accept=_in_c1) as sub:
        for n, conversation in enumerate(["c2", "c2", "c1", "c2", "c2"]):
            await append(hub.log, WS, f"e{n}", b"", NOW, _about(conversation))
        await asyncio.sleep(0.05)  # all offered; a queue of 1 holds only the c1 record
        record = await next_record(sub)
        assert (record.event_id, record.sequence) == ("e2", 3)
        # Past what was filtered out after it, with nothing more to yield:
        assert ResumeToken.decode(sub.resume_token).positions == {WS: 5}
        await append(hub.log, WS, "e5", b"", NOW, _about("c2"))
        item = await anext(sub)
        assert isinstance(item, Heartbeat)
        assert ResumeToken.decode(item.resume_token).positions == {WS: 6}


async def test_a_filtered_replay_yields_only_what_it_accepts_and_resumes_past_the_rest(
    hub: EventHub,
) -> None:
    for n, conversation in enumerate(["c1", "c2", "c1", "c2", "c2"]):
        await append(hub.log, WS, f"e{n}", b"", NOW, _about(conversation))
    async with hub.subscribe({WS: 0}, queue_size=1, heartbeat=0.2, accept=_in_c1) as sub:
        assert [(await next_record(sub)).event_id for _ in range(2)] == ["e0", "e2"]
        item = await anext(sub)
        assert isinstance(item, Heartbeat)
        assert ResumeToken.decode(item.resume_token).positions == {WS: 5}


class _DeafLog(InMemoryEventLog):
    """An in-process log whose wake-ups never come (as if another replica's were lost)."""

    async def wait(self, cursors: Mapping[str, int], max_wait: float) -> set[str]:
        await asyncio.sleep(max_wait)
        return set()


async def test_an_append_handed_to_the_hub_reaches_local_subscribers_without_a_wake_up() -> None:
    log = _DeafLog()
    hub = EventHub(log, poll_interval=60)
    async with hub.subscribe({WS: None}, queue_size=8, heartbeat=60) as sub:
        records = [await append(log, WS, f"e{n}", b"", NOW) for n in range(3)]
        hub.published(records[0])
        hub.published(records[2])  # out of order: the reader reads the log for it
        hub.published(records[1])
        assert [(await next_record(sub)).event_id for _ in range(3)] == ["e0", "e1", "e2"]


async def test_a_narrowed_subscriber_is_offered_only_its_conversation_and_still_advances(
    hub: EventHub,
) -> None:
    asked: list[str] = []

    def accept(envelope: EventEnvelope) -> bool:
        asked.append(envelope.conversation_id)
        return envelope.conversation_id in ("c1", "")

    subscribe = hub.subscribe
    async with (
        subscribe({WS: None}, queue_size=2, heartbeat=0.2, accept=accept, conversation="c1") as sub,
        subscribe({WS: None}, queue_size=8, heartbeat=60, conversation="c2") as other,
    ):
        about = ["c2", "c2", "c1", "c2", "", "c2"]
        for n, conversation in enumerate(about):
            await append(hub.log, WS, f"e{n}", b"", NOW, _about(conversation))
        await asyncio.sleep(0.05)  # all offered; a queue of 2 holds just the two it accepts
        assert [(await next_record(sub)).event_id for _ in range(2)] == ["e2", "e4"]
        # Never asked about another conversation's records, yet past them all:
        assert asked == ["c1", ""]
        assert ResumeToken.decode(sub.resume_token).positions == {WS: 6}
        assert [(await next_record(other)).event_id for _ in range(5)] == [
            "e0",
            "e1",
            "e3",
            "e4",
            "e5",
        ]
        record = await append(hub.log, WS, "e6", b"", NOW, _about("c2"))
        hub.published(record)  # the single-record path
        item = await anext(sub)
        assert isinstance(item, Heartbeat)
        assert ResumeToken.decode(item.resume_token).positions == {WS: 7}
        assert (await next_record(other)).event_id == "e6"


async def test_a_narrowed_subscriber_resumed_from_its_token_gets_nothing_twice(
    hub: EventHub,
) -> None:
    for n, conversation in enumerate(["c1", "c2", "c1", "c2"]):
        await append(hub.log, WS, f"e{n}", b"", NOW, _about(conversation))
    async with hub.subscribe({WS: 0}, queue_size=4, heartbeat=0.2, conversation="c1") as sub:
        assert [(await next_record(sub)).event_id for _ in range(2)] == ["e0", "e2"]
        await append(hub.log, WS, "e4", b"", NOW, _about("c2"))
        await append(hub.log, WS, "e5", b"", NOW, _about("c1"))
        assert (await next_record(sub)).event_id == "e5"
        token = sub.resume_token
    assert ResumeToken.decode(token).positions == {WS: 6}
    await append(hub.log, WS, "e6", b"", NOW, _about("c1"))
    resumed = ResumeToken.decode(token).positions
    async with hub.subscribe(resumed, queue_size=4, heartbeat=0.2, conversation="c1") as again:
        assert (await next_record(again)).event_id == "e6"
