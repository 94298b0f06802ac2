"""Cortex's admission and the drain (``api.streams.StreamRegistry``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from support.events import append

from cortex_core import errors
from cortex_core.adapters.memory_event_log import InMemoryEventLog
from cortex_core.api.streams import StreamRegistry
from cortex_core.domain.event_records import EventRecord
from cortex_core.services.admission import MIN_RETRY_DELAY, ReplyAdmission
from cortex_core.services.event_hub import EventHub


async def test_past_the_slots_callers_wait_in_line_and_past_the_line_are_refused() -> None:
    registry = StreamRegistry(max_calls=2, max_waiting=1)
    await registry.admit()
    await registry.admit()
    waiting = asyncio.create_task(registry.admit())
    await asyncio.sleep(0)
    with pytest.raises(errors.ResourceExhausted) as refused:
        await registry.admit()
    assert refused.value.reason == "TOO_MANY_REQUESTS"
    assert refused.value.retry_after is not None
    assert refused.value.retry_after > 0
    assert not waiting.done()
    registry.release()  # the slot goes to the caller in line
    await asyncio.wait_for(waiting, 1)
    assert registry.calls == 2


async def test_the_drain_serves_short_calls_then_refuses_everyone_with_retry_info() -> None:
    registry = StreamRegistry(max_calls=1, max_waiting=5)
    await registry.admit()
    waiting = asyncio.create_task(registry.admit())
    await asyncio.sleep(0)
    registry.begin_drain()
    with pytest.raises(errors.Unavailable) as stream_refused:
        await registry.admit(interrupt_on_drain=True)
    assert stream_refused.value.reason == "SERVER_SHUTTING_DOWN"
    registry.stop_admitting()
    for refused in (waiting, asyncio.create_task(registry.admit())):
        with pytest.raises(errors.Unavailable) as caught:
            await refused
        assert caught.value.reason == "SERVER_SHUTTING_DOWN"
        assert caught.value.retry_after is not None
        assert caught.value.retry_after > 0
    await registry.admit(exempt=True)  # health checks still answer
    assert registry.calls == 2


async def test_settled_waits_for_no_call_and_no_arrival_for_the_quiet_period() -> None:
    registry = StreamRegistry()
    await registry.admit()
    registry.begin_drain()
    settled = asyncio.create_task(registry.settled(0.2))
    await asyncio.sleep(0.05)
    registry.release()
    await registry.admit()  # a call that was queued before the drain arrives
    registry.release()
    assert not settled.done()
    await asyncio.wait_for(settled, 2)
    assert registry.calls == 0


async def test_the_drain_ends_every_subscription_with_its_own_resume_token() -> None:
    hub = EventHub(InMemoryEventLog())
    registry = StreamRegistry(hub)
    now = datetime.now(UTC)
    await append(hub.log, "ws:a", "e1", b"", now)
    async with hub.subscribe({"ws:a": 0}, queue_size=8, heartbeat=60) as open_before:
        first = await anext(open_before)
        assert isinstance(first, EventRecord)
        registry.begin_drain()
        assert registry.tell_streams() == 1
        with pytest.raises(errors.Unavailable) as ended:
            await anext(open_before)
        assert ended.value.reason == "SERVER_SHUTTING_DOWN"
        assert ended.value.metadata["resume_token"] == open_before.resume_token
    # One that opens during the drain ends as soon as it is entered, where it asked to start.
    async with hub.subscribe({"ws:a": 1}, queue_size=8, heartbeat=60) as opened_later:
        with pytest.raises(errors.Unavailable) as ended:
            await asyncio.wait_for(anext(opened_later), 5)
        assert ended.value.metadata["resume_token"] == opened_later.resume_token
    await hub.aclose()


def test_a_burst_past_the_reply_slots_is_told_staggered_delays_that_match_the_slots() -> None:
    now = [0.0]
    admission = ReplyAdmission(4, initial_hold=2.0, clock=lambda: now[0])
    entered = [admission.enter() for _ in range(4)]
    delays = []
    for _ in range(12):
        with pytest.raises(errors.ResourceExhausted) as refused:
            admission.enter()
        assert refused.value.reason == "TOO_MANY_ACTIVE_REPLIES"
        assert refused.value.retry_after is not None
        delays.append(refused.value.retry_after)
    # Not all sent back at once: each later caller is told a later time, one
    # slot's turn (2 s over 4 slots) after the one before.
    assert delays == pytest.approx([(n + 1) * 2.0 / 4 for n in range(12)])
    # Replies that held their slot 1 s make the next line move faster.
    now[0] = 1.0
    for started in entered:
        admission.leave(started)
    for _ in range(4):
        admission.enter()
    now[0] = 10.0  # the old line has long passed
    with pytest.raises(errors.ResourceExhausted) as later:
        admission.enter()
    assert later.value.retry_after is not None
    assert MIN_RETRY_DELAY <= later.value.retry_after < 2.0 / 4
