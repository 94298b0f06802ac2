"""Tracks open server streams so a draining server can tell each one to go away.

On shutdown every open stream ends with ``UNAVAILABLE`` (reason
``SERVER_SHUTTING_DOWN``) instead of being cut, so clients reconnect to another
replica and resume from their last token.
"""

from __future__ import annotations

import asyncio

SHUTDOWN_MESSAGE = "cortex-shutdown"


class StreamRegistry:
    """The set of tasks currently serving a server-streaming RPC."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self.draining = False

    def add(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)

    def discard(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)

    def __len__(self) -> int:
        return len(self._tasks)

    def close_all(self) -> int:
        """Mark the server as draining and interrupt every open stream; return how many."""
        self.draining = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel(SHUTDOWN_MESSAGE)
        return len(tasks)
