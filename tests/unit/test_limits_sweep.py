"""The in-process call limits expire their counters under the supervisor, not in
tasks of ``limits``' own that nobody awaits."""

from __future__ import annotations

import asyncio

import pytest

from cortex_core import errors
from cortex_core.api.limits import CallLimiter, SweptMemoryStorage, rate


def limiter(storage: SweptMemoryStorage, per_user: str = "3/minute") -> CallLimiter:
    return CallLimiter(
        storage,
        user_rate=rate(per_user),
        workspace_rate=rate("1000/minute"),
        max_streams_per_user=1,
    )


async def test_counting_calls_in_process_starts_no_task() -> None:
    storage = SweptMemoryStorage()
    calls = limiter(storage)
    before = asyncio.all_tasks()

    for _ in range(3):
        await calls.admit("alice", object())

    assert asyncio.all_tasks() == before
    assert storage.timer is None  # the library's own sweep task never started
    with pytest.raises(errors.ResourceExhausted) as refused:
        await calls.admit("alice", object())
    assert refused.value.reason == "RATE_LIMITED"


async def test_a_sweep_drops_expired_counters_and_keeps_live_ones() -> None:
    storage = SweptMemoryStorage()
    await storage.incr("expired", 0.05)
    await storage.incr("live", 60)
    await asyncio.sleep(0.1)

    assert await storage.sweep() == 1

    assert "expired" not in storage.storage
    assert "expired" not in storage.expirations
    assert await storage.get("live") == 1
    assert await storage.sweep() == 0


async def test_limits_still_hold_after_a_sweep() -> None:
    storage = SweptMemoryStorage()
    calls = limiter(storage, per_user="2/minute")
    await calls.admit("bob", object())
    await calls.sweep()
    await calls.admit("bob", object())

    with pytest.raises(errors.ResourceExhausted):
        await calls.admit("bob", object())
