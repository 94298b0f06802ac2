"""Log configuration: JSON lines for machines, a compact console format for people.

Records are handed to a queue on the event loop and formatted and written by a
listener thread, so a slow or blocked stderr never stalls request handling.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys

from opentelemetry.trace import get_current_span
from pythonjsonlogger.json import JsonFormatter


class _ThreadQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the listener thread as they are; formatting happens there.

    The stock ``prepare`` formats every record on the calling thread (so that it
    can be pickled to another process); within one process that work is wasted.
    A record written inside a span gets its ``trace_id`` and ``span_id`` (W3C hex),
    which the JSON formatter writes as fields.
    """

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The span is a context variable of the calling task: read it here, before
        # the record crosses to the listener thread.
        span = get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return record


def configure_logging(level: int, fmt: str) -> logging.handlers.QueueListener:
    """Send all records to stderr in ``fmt`` ("json" or "console") at ``level``.

    Returns the started listener; it is stopped (and the queue flushed) at exit.
    """
    output = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        output.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        output.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, output, respect_handler_level=False)
    root = logging.getLogger()
    root.handlers[:] = [_ThreadQueueHandler(records)]
    root.setLevel(level)
    # Alembic announces every plugin at INFO on each start; keep its warnings only.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    listener.start()
    atexit.register(listener.stop)
    return listener
