"""The supervisor: machinery that keeps every loop outside a request alive.

A loop is a name and a *step*, an async function the supervisor calls again
and again. A step does one round of work, waiting first when it has none (for
a wake-up or an interval); a step that never returns (a forever loop) is fine
too. When a step raises, the supervisor logs the failure, marks the loop
``BACKING_OFF`` with the error, waits (doubling from ``initial_backoff`` up to
``max_backoff``, with jitter so replicas do not retry in step) and calls it
again; once a retried step returns, or runs ``healthy_after`` seconds without
failing (a forever loop), the loop is ``RUNNING`` again. Only cancellation ends
a loop. Every state change is reported to ``on_change``
(health publishes it).

It lives beside the use cases, not among them: it decides nothing a user asks
for, and imports nothing but asyncio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from cortex_core import errors

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[object]]


class LoopStatus(enum.Enum):
    RUNNING = "running"
    BACKING_OFF = "backing off"


@dataclasses.dataclass(frozen=True, slots=True)
class Loop:
    """A supervised loop: ``name`` (health service ``cortex.background.<name>``)
    and the ``step`` called over and over."""

    name: str
    step: Step


@dataclasses.dataclass(frozen=True, slots=True)
class LoopState:
    name: str
    status: LoopStatus
    failures: int = 0  # in a row; 0 while running
    last_error: str = ""


Observer = Callable[[LoopState], Awaitable[None]]


async def _ignore(state: LoopState) -> None:
    return None


def every(interval: float, action: Step, *, wait_first: bool = False) -> Step:
    """A step that runs ``action`` and then waits ``interval`` seconds (or waits
    first, for an action that has just been done at start)."""

    async def step() -> None:
        if wait_first:
            await asyncio.sleep(interval)
        await action()
        if not wait_first:
            await asyncio.sleep(interval)

    return step


class Supervisor:
    def __init__(
        self,
        *,
        on_change: Observer = _ignore,
        initial_backoff: float = 0.5,
        max_backoff: float = 10.0,
        healthy_after: float = 5.0,
    ) -> None:
        self._on_change = on_change
        self._healthy_after = healthy_after
        self._initial = initial_backoff
        self._max = max_backoff
        self._states: dict[str, LoopState] = {}
        self._retry_at: dict[str, float] = {}

    @property
    def states(self) -> dict[str, LoopState]:
        """The current state of every loop, by name."""
        return dict(self._states)

    def retry_in(self, name: str) -> float | None:
        """Seconds until the loop ``name`` is called again after a failure, or None
        while it runs (a hint for callers told that what it keeps up is down)."""
        at = self._retry_at.get(name)
        if at is None:
            return None
        return max(0.0, at - asyncio.get_running_loop().time())

    async def start(self, loops: Sequence[Loop]) -> list[asyncio.Task[None]]:
        """Report every loop running, then start one task per loop; cancel the
        tasks to stop them."""
        for loop in loops:
            await self._report(LoopState(loop.name, LoopStatus.RUNNING))
        return [
            asyncio.create_task(self._supervise(loop), name=f"background:{loop.name}")
            for loop in loops
        ]

    async def _supervise(self, loop: Loop) -> None:
        failures = 0
        while True:
            retry = asyncio.ensure_future(loop.step()) if failures else None
            try:
                if retry is None:
                    await loop.step()
                else:
                    if await self._survives(retry):
                        log.info(
                            "background loop %s recovered after %d failures", loop.name, failures
                        )
                        failures = 0
                        await self._report(LoopState(loop.name, LoopStatus.RUNNING))
                    await retry
            except Exception as error:  # noqa: BLE001 - every failure is logged and retried
                failures += 1
                delay = self._delay(failures)
                self._log_failure(loop.name, error, failures, delay)
                await self._report(
                    LoopState(loop.name, LoopStatus.BACKING_OFF, failures, _describe(error))
                )
                self._retry_at[loop.name] = asyncio.get_running_loop().time() + delay
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._retry_at.pop(loop.name, None)
            finally:
                if retry is not None and not retry.done():  # we were cancelled
                    retry.cancel()
                    await asyncio.gather(retry, return_exceptions=True)

    async def _survives(self, retry: asyncio.Future[object]) -> bool:
        """Whether a retried step returned, or is still running after
        ``healthy_after`` seconds (a forever loop that started again)."""
        done, _ = await asyncio.wait({retry}, timeout=self._healthy_after)
        return not done or retry.exception() is None

    def _delay(self, failures: int) -> float:
        ceiling = min(self._max, self._initial * 2 ** min(failures - 1, 30))
        return random.uniform(ceiling / 2, ceiling)

    async def _report(self, state: LoopState) -> None:
        self._states[state.name] = state
        try:
            await self._on_change(state)
        except Exception:  # the observer's failure must not stop the loop it watches
            log.exception("reporting background loop %s failed", state.name)

    @staticmethod
    def _log_failure(name: str, error: Exception, failures: int, delay: float) -> None:
        expected = isinstance(error, errors.CortexError)  # an outage: no stack needed
        log.warning(
            "background loop %s failed (%d in a row); retrying in %.1f s: %s",
            name,
            failures,
            delay,
            _describe(error),
            exc_info=None if expected else error,
        )


def _describe(error: Exception) -> str:
    if isinstance(error, errors.CortexError):
        return f"{error.reason}: {error.message}"
    return f"{type(error).__name__}: {error}"
