"""Span helpers for use cases and machinery (``opentelemetry-api`` only: no I/O).

The tracer comes from bootstrap (``App.tracer``): the SDK's when tracing is on,
OpenTelemetry's no-op tracer otherwise, so code that traces never asks whether
tracing is on. Nothing here reads or sets OpenTelemetry's global provider.

For issue 12's task runtime: a task stores :func:`current_traceparent` when it
is created, and each attempt runs in
``with start_span(tracer, "task.attempt", links=links_to(task.traceparent), attributes=...)``
so the attempt's own trace links back to the RPC that created the task.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

_PROPAGATOR = TraceContextTextMapPropagator()


def no_tracer() -> Tracer:
    """A tracer whose spans are never recorded (tracing off)."""
    return trace.NoOpTracer()


@contextlib.contextmanager
def start_span(
    tracer: Tracer,
    name: str,
    *,
    attributes: Mapping[str, AttributeValue] | None = None,
    links: Sequence[Link] = (),
    kind: SpanKind = SpanKind.INTERNAL,
) -> Iterator[Span]:
    """A child of the current span (or a root), current inside the block.

    An exception leaving the block marks the span ERROR and is re-raised;
    ``asyncio.CancelledError`` ends it with status UNSET and an ``outcome`` of
    ``cancelled``. Callers set their own ``outcome`` attribute otherwise."""
    with tracer.start_as_current_span(
        name,
        kind=kind,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        except BaseException:
            span.set_attribute("outcome", "cancelled")
            raise


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span ("" outside a recorded trace);
    store it with work that runs later (a task) and pass it to :func:`links_to`."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent", "")


def links_to(traceparent: str) -> list[Link]:
    """A link to the span ``traceparent`` names; none when it is empty or invalid."""
    if not traceparent:
        return []
    context = trace.get_current_span(_PROPAGATOR.extract({"traceparent": traceparent}))
    span_context = context.get_span_context()
    return [Link(span_context)] if span_context.is_valid else []
