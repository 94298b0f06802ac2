""":class:`~cortex_core.ports.TaskSignals` across replicas, over Redis pub/sub on
the process's one Redis client.

Three channels: ``<prefix>work`` (a task can be claimed), ``<prefix>cancel``
(payload: the task id) and ``<prefix>journal`` (``<task id> <sequence>``).
Publishing delivers locally at once (this process's waiters need no round trip)
and then to Redis; a Redis error is logged at most once per outage and
swallowed: signals are hints, every waiter also polls the database.
:meth:`RedisTaskSignals.listen` is a supervised loop holding one pooled
connection for the subscription and feeding what other replicas publish into
the local :class:`~cortex_core.adapters.task_signals.LocalTaskSignals`.
"""

from __future__ import annotations

import contextlib
import logging

import redis.asyncio as redis
from redis.exceptions import RedisError

from cortex_core import errors
from cortex_core.adapters.task_signals import LocalTaskSignals

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "cortex:tasks:"
LISTEN_TIMEOUT = 1.0  # seconds one read of the subscription waits


class RedisTaskSignals(LocalTaskSignals):
    def __init__(self, client: redis.Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__()
        self._client = client
        self._work_channel = f"{prefix}work"
        self._cancel_channel = f"{prefix}cancel"
        self._journal_channel = f"{prefix}journal"
        self._failing = False

    async def work_queued(self) -> None:
        self.deliver_work()
        await self._publish(self._work_channel, "1")

    async def cancel(self, task_id: str) -> None:
        self.deliver_cancel(task_id)
        await self._publish(self._cancel_channel, task_id)

    async def journal_appended(self, task_id: str, sequence: int) -> None:
        self.deliver_journal(task_id, sequence)
        await self._publish(self._journal_channel, f"{task_id} {sequence}")

    async def listen(self) -> None:
        """Relay other replicas' signals here until cancelled; raise Unavailable
        when Redis cannot be reached (the supervisor backs off)."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._work_channel, self._cancel_channel, self._journal_channel)
            while True:
                message = await pubsub.get_message(timeout=LISTEN_TIMEOUT)
                if message is not None:
                    self._dispatch(_text(message["channel"]), _text(message["data"]))
        except (RedisError, OSError) as exc:
            raise errors.Unavailable(
                "task signals cannot reach Redis", reason="TASK_SIGNALS_UNAVAILABLE"
            ) from exc
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    def _dispatch(self, channel: str, data: str) -> None:
        if channel == self._work_channel:
            self.deliver_work()
        elif channel == self._cancel_channel:
            self.deliver_cancel(data)
        elif channel == self._journal_channel:
            task_id, _, sequence = data.partition(" ")
            if sequence.isdigit():
                self.deliver_journal(task_id, int(sequence))

    async def _publish(self, channel: str, data: str) -> None:
        try:
            await self._client.publish(channel, data)
        except (RedisError, OSError) as exc:
            if not self._failing:
                log.warning("task signals cannot reach Redis: %s", exc.__class__.__name__)
            self._failing = True
            return
        if self._failing:
            log.info("task signals reach Redis again")
        self._failing = False


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
