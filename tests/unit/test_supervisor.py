"""The supervisor keeps a loop alive through failures and says so while it backs off."""

from __future__ import annotations

import asyncio
import logging

import pytest

from cortex_core import errors
from cortex_core.services.supervisor import Loop, LoopState, LoopStatus, Supervisor


async def test_a_failing_step_is_retried_after_a_backoff_and_reported_until_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cortex_core.services.supervisor")
    failures = [errors.Unavailable("down", reason="DATABASE_UNAVAILABLE"), RuntimeError("bug")]
    recovered = asyncio.Event()
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if failures:
            raise failures.pop(0)
        await asyncio.Event().wait()  # a forever loop, running fine now

    seen: list[LoopState] = []

    async def observe(state: LoopState) -> None:
        seen.append(state)
        if state.status is LoopStatus.RUNNING and len(seen) > 1:
            recovered.set()

    supervisor = Supervisor(
        on_change=observe, initial_backoff=0.01, max_backoff=0.02, healthy_after=0.05
    )
    (task,) = await supervisor.start([Loop("jobs", step)])
    try:
        async with asyncio.timeout(5):
            await recovered.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls == 3
    assert [(s.status, s.failures) for s in seen] == [
        (LoopStatus.RUNNING, 0),
        (LoopStatus.BACKING_OFF, 1),
        (LoopStatus.BACKING_OFF, 2),
        (LoopStatus.RUNNING, 0),
    ]
    assert seen[1].last_error == "DATABASE_UNAVAILABLE: down"
    assert seen[2].last_error == "RuntimeError: bug"
    assert "background loop jobs recovered after 2 failures" in caplog.text


async def test_a_loop_backing_off_says_when_it_runs_again() -> None:
    supervisor = Supervisor(initial_backoff=0.4, max_backoff=0.4)
    attempts = 0

    async def step() -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("down")

    assert supervisor.retry_in("flaky") is None
    (task,) = await supervisor.start([Loop("flaky", step)])
    try:
        async with asyncio.timeout(5):
            while attempts < 1 or supervisor.retry_in("flaky") is None:
                await asyncio.sleep(0.01)
        hint = supervisor.retry_in("flaky")
        assert hint is not None
        assert 0 < hint <= 0.4
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
