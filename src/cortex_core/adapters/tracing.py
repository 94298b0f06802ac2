"""Traces: the OpenTelemetry SDK, its OTLP exporter and the maintained instrumentations.

Tracing is on when ``CORTEX_TRACING=true`` or an OTLP endpoint is configured
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and
off when ``OTEL_SDK_DISABLED=true``. Everything else is the SDK's own reading of
the standard variables: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
(the resource; the service name defaults to ``cortex-core`` here),
``OTEL_TRACES_SAMPLER``/``_ARG`` (the sampler), ``OTEL_EXPORTER_OTLP_*``
(endpoint, headers, certificates, timeout, compression) and ``OTEL_BSP_*``
(batching). ``OTEL_TRACES_EXPORTER`` may be ``otlp`` (the default) or ``none``
(spans are made and dropped); ``OTEL_EXPORTER_OTLP_PROTOCOL`` must be ``grpc``:
those are the only ones this build ships, and any other value stops the start.

:func:`tracer_provider` builds one provider per :class:`App`; it never sets
OpenTelemetry's global provider (tests start several servers in one process):
the provider is passed to each instrumentation and to the code that makes spans.
The exporter sends from the SDK's batch thread, never the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.metrics import NoOpUpDownCounter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SERVICE = "cortex-core"
INSTRUMENTATION = "cortex_core"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")


class TracingConfigError(ValueError):
    """An ``OTEL_*`` value this build cannot honour; the message names the variable."""


def tracing_wanted(forced: bool, environ: Mapping[str, str]) -> bool:
    """Whether to build a provider: forced by ``CORTEX_TRACING`` or an endpoint
    being set, unless ``OTEL_SDK_DISABLED`` is true."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return forced or any(environ.get(name) for name in _ENDPOINTS)


def tracer_provider(environ: Mapping[str, str]) -> TracerProvider:
    """A provider exporting over OTLP/gRPC as the ``OTEL_*`` variables say.

    Raises :class:`TracingConfigError` for an exporter or protocol not shipped."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    if exporter not in ("otlp", "none"):
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={exporter!r}: this build exports with 'otlp' or 'none'"
        )
    for name in _PROTOCOLS:
        protocol = environ.get(name, "").strip().lower()
        if protocol and protocol != "grpc":
            raise TracingConfigError(
                f"{name}={protocol!r}: this build ships the OTLP exporter over 'grpc' only"
            )
    defaults = Resource({SERVICE_NAME: SERVICE})
    # Resource.create() reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; they win.
    resource = defaults.merge(Resource.create())
    if not environ.get("OTEL_SERVICE_NAME") and "service.name=" not in environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        resource = resource.merge(defaults)
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def instrument_engine(engine: Any, provider: TracerProvider) -> None:
    """SQL spans for every statement on ``engine`` (an ``AsyncEngine``).

    Uses the instrumentation's engine tracer directly: ``SQLAlchemyInstrumentor``
    would also patch ``create_engine`` process-wide and works once per process."""
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    usage = NoOpUpDownCounter("db.client.connections.usage")
    EngineTracer(tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]


def instrument_redis(client: Any, provider: TracerProvider) -> None:
    """Redis spans for every command of ``client`` (this client only)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client, tracer_provider=provider)
