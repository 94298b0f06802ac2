"""In-process :class:`~cortex_core.ports.TaskSignals`: the embedded default (one
process), and the local half of the Redis implementation (which feeds it what
other replicas publish).

Every waiter waits on a future of its own for at most its timeout; a signal
resolves the futures waiting for it. A signal nobody waits for is remembered
only for cancels (a worker may start waiting just after the cancel arrived), and
only for :data:`CANCEL_MEMORY` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict

CANCEL_MEMORY = 60.0


class LocalTaskSignals:
    def __init__(self) -> None:
        self._work: list[asyncio.Future[None]] = []
        self._cancel_waiters: defaultdict[str, list[asyncio.Future[None]]] = defaultdict(list)
        self._cancelled: dict[str, float] = {}
        self._journal: defaultdict[str, list[tuple[int, asyncio.Future[None]]]] = defaultdict(list)

    # --- what a publisher (or the Redis listener) calls -------------------------

    def deliver_work(self) -> None:
        waiters, self._work = self._work, []
        _wake(waiters)

    def deliver_cancel(self, task_id: str) -> None:
        now = time.monotonic()
        self._cancelled = {k: t for k, t in self._cancelled.items() if now - t < CANCEL_MEMORY}
        self._cancelled[task_id] = now
        _wake(self._cancel_waiters.pop(task_id, []))

    def deliver_journal(self, task_id: str, sequence: int) -> None:
        waiting = self._journal.pop(task_id, [])
        later = [(after, f) for after, f in waiting if sequence <= after and not f.done()]
        _wake([f for after, f in waiting if sequence > after])
        if later:
            self._journal[task_id] = later

    # --- the port ----------------------------------------------------------------

    async def work_queued(self) -> None:
        self.deliver_work()

    async def wait_for_work(self, max_wait: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._work.append(waiter)
        try:
            await _bounded(waiter, max_wait)
        finally:
            with contextlib.suppress(ValueError):
                self._work.remove(waiter)

    async def cancel(self, task_id: str) -> None:
        self.deliver_cancel(task_id)

    async def wait_cancel(self, task_id: str, max_wait: float) -> bool:
        if task_id in self._cancelled:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._cancel_waiters[task_id].append(waiter)
        try:
            await _bounded(waiter, max_wait)
        finally:
            waiters = self._cancel_waiters.get(task_id)
            if waiters is not None:
                with contextlib.suppress(ValueError):
                    waiters.remove(waiter)
                if not waiters:
                    del self._cancel_waiters[task_id]
        return task_id in self._cancelled

    async def journal_appended(self, task_id: str, sequence: int) -> None:
        self.deliver_journal(task_id, sequence)

    async def wait_journal(self, task_id: str, after_sequence: int, max_wait: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        entry = (after_sequence, waiter)
        self._journal[task_id].append(entry)
        try:
            await _bounded(waiter, max_wait)
        finally:
            waiting = self._journal.get(task_id)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(entry)
                if not waiting:
                    del self._journal[task_id]

    async def close(self) -> None:
        self.deliver_work()
        for task_id in list(self._journal):
            _wake([f for _, f in self._journal.pop(task_id)])


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


async def _bounded(waiter: asyncio.Future[None], seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(seconds, 0.0)):
            await waiter
