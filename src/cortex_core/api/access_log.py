"""The access log: one line per call (method, code, duration, peer, request id).

It is the highest-volume log a server writes, so it does not go through the
``logging`` machinery call by call: a call appends a tuple to a bounded buffer
(about a microsecond), and a background task formats the buffer every
``interval`` seconds and writes it in one piece on a worker thread, so neither
formatting bursts nor a slow stderr stall the event loop. Lines have the same
shape as the other JSON logs (``time``, ``level``, ``logger``, ``message``).

If the buffer fills (the output is stuck), further records are dropped and
counted, and the next flush writes a line saying how many were lost: memory
stays bounded and the loss is never silent.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

LOGGER_NAME = "cortex.access"
_Record = tuple[float, str, str, float, str, str]


class AccessLog:
    """Buffers access records and writes them in batches."""

    def __init__(
        self,
        fmt: str = "json",
        stream: TextIO | None = None,
        *,
        interval: float = 0.2,
        capacity: int = 50_000,
    ) -> None:
        self._fmt = fmt
        self._stream = stream
        self._interval = interval
        self._capacity = capacity
        self._buffer: list[_Record] = []
        self._dropped = 0

    def record(
        self, method: str, code: str, duration_ms: float, peer: str, request_id: str
    ) -> None:
        """Queue one call's record; never blocks, never raises."""
        if len(self._buffer) >= self._capacity:
            self._dropped += 1
            return
        self._buffer.append((time.time(), method, code, duration_ms, peer, request_id))

    async def run(self) -> None:
        """Flush every ``interval`` seconds until cancelled, then flush what is left."""
        try:
            while True:
                await asyncio.sleep(self._interval)
                await self.flush()
        finally:
            self._write(self._render())

    async def flush(self) -> None:
        text = self._render()
        if text:
            await asyncio.to_thread(self._write, text)

    def _render(self) -> str:
        records, self._buffer = self._buffer, []
        dropped, self._dropped = self._dropped, 0
        lines = [self._line(record) for record in records]
        if dropped:
            lines.append(self._dropped_line(dropped))
        return "".join(lines)

    def _write(self, text: str) -> None:
        if not text:
            return
        stream = self._stream or sys.stderr
        stream.write(text)
        stream.flush()

    def _line(self, record: _Record) -> str:
        when, method, code, duration_ms, peer, request_id = record
        stamp = datetime.fromtimestamp(when, UTC).isoformat()
        if self._fmt != "json":
            return (
                f"{stamp} INFO    {LOGGER_NAME}: {method} {code} {duration_ms:.3f}ms"
                f" {peer} {request_id}\n"
            )
        return (
            json.dumps(
                {
                    "level": "INFO",
                    "logger": LOGGER_NAME,
                    "message": f"{method} {code}",
                    "method": method,
                    "code": code,
                    "duration_ms": duration_ms,
                    "peer": peer,
                    "request_id": request_id,
                    "time": stamp,
                }
            )
            + "\n"
        )

    def _dropped_line(self, dropped: int) -> str:
        stamp = datetime.now(UTC).isoformat()
        message = f"access log output is stuck; {dropped} records were dropped"
        if self._fmt != "json":
            return f"{stamp} WARNING {LOGGER_NAME}: {message}\n"
        return (
            json.dumps(
                {
                    "level": "WARNING",
                    "logger": LOGGER_NAME,
                    "message": message,
                    "dropped": dropped,
                    "time": stamp,
                }
            )
            + "\n"
        )
