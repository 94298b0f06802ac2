"""A client that stops answering is reaped within the documented keepalive time.

The documented bound (``server.py``, ``docs/architecture.md``): a ping after
``KEEPALIVE_TIME_MS`` of silence, and the connection closed when its ack has not
come ``KEEPALIVE_TIMEOUT_MS`` later. The client here is a real process holding an
event stream open; it is frozen with SIGSTOP, so its socket stays open but nothing
answers, as with a crashed laptop or a vanished NAT mapping.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from support.clients import Client
from support.inprocess import running_app

from cortex_core.server import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS

_LISTENER = """
import sys, grpc
from cortex.events.v1 import event_service_pb2 as pb, event_service_pb2_grpc as pb_grpc
channel = grpc.insecure_channel(sys.argv[1])
stream = pb_grpc.EventServiceStub(channel).SubscribeEvents(
    pb.SubscribeEventsRequest(), metadata=(("authorization", "Bearer " + sys.argv[2]),)
)
for frame in stream:
    pass
"""
#: Scheduling slack on a shared machine, beyond the documented bound.
_SLACK = 10.0


async def _wait_for(condition: object, limit: float) -> float:
    """Seconds until ``condition()`` held; fails when it did not within ``limit``."""
    start = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - start < limit, "condition not met in time"
        await asyncio.sleep(0.2)
    return time.monotonic() - start


async def test_a_frozen_clients_stream_is_closed_within_the_keepalive_time(
    tmp_path: Path,
) -> None:
    bound = (KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS) / 1000
    async with running_app(tmp_path, events_heartbeat=3600.0) as running:
        client = Client(running.address)
        account = await client.register()
        await client.close()
        streams = running.app.streams
        listener = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _LISTENER, running.address, account.access_token
        )
        try:
            await _wait_for(lambda: len(streams) == 1, 30)
            os.kill(listener.pid, signal.SIGSTOP)

            reaped_after = await _wait_for(lambda: len(streams) == 0, bound + _SLACK)
        finally:
            os.kill(listener.pid, signal.SIGCONT)
            listener.kill()
            await listener.wait()

    assert reaped_after <= bound + _SLACK
