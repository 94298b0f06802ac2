"""The Prometheus metrics (``prometheus-client``) and the ``/metrics`` endpoint.

:class:`PrometheusMetrics` is the :class:`~cortex_core.ports.Metrics` port over
one :class:`~prometheus_client.CollectorRegistry` per :class:`App` (never the
library's global registry, so several servers in one process stay apart).
Labelled children are resolved once per label set and cached, so recording a
call costs a dict lookup and the library's own lock-protected increments.
:class:`NullMetrics` is the port when ``CORTEX_METRICS_ADDRESS`` is empty.

:func:`serve_metrics` starts prometheus-client's HTTP server on its own daemon
thread: a scrape never runs on the event loop. Every series is listed with its
labels in ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Seconds; calls are sub-millisecond to a model reply of a minute.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SLOW_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
BREAKER_STATES = ("closed", "half_open", "open")


class NullMetrics:
    """Records nothing (metrics off)."""

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        pass

    def stream_opened(self, method: str) -> None:
        pass

    def stream_closed(self, method: str) -> None:
        pass

    def event_delivered(self, lag_seconds: float) -> None:
        pass

    def subscriber_cut(self) -> None:
        pass

    def outbox_backlog(self, events: int) -> None:
        pass

    def model_attempt(self, provider: str, outcome: str, first_token_seconds: float | None) -> None:
        pass

    def model_tokens(self, provider: str, kind: str, count: int) -> None:
        pass

    def breaker_state(self, provider: str, state: str) -> None:
        pass

    def tool_call(self, server: str, outcome: str, seconds: float) -> None:
        pass

    def task_queue_depth(self, tasks: int) -> None:
        pass

    def task_claimed(self, expert: str, wait_seconds: float) -> None:
        pass

    def task_attempt(self, expert: str, outcome: str) -> None:
        pass


class PrometheusMetrics:
    """Every Cortex series, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry(auto_describe=True)
        self._rpcs = Counter(
            "cortex_rpc_requests", "Calls by method and final gRPC code.",
            ["method", "code"], registry=registry,
        )  # fmt: skip
        self._rpc_seconds = Histogram(
            "cortex_rpc_duration_seconds", "Call duration by method (streams: their whole life).",
            ["method"], buckets=RPC_BUCKETS, registry=registry,
        )  # fmt: skip
        self._streams = Gauge(
            "cortex_open_streams", "Server streams open now, by method.",
            ["method"], registry=registry,
        )  # fmt: skip
        self._event_lag = Histogram(
            "cortex_event_delivery_lag_seconds",
            "From an event's publication to its delivery to a live subscriber.",
            buckets=LAG_BUCKETS, registry=registry,
        )  # fmt: skip
        self._cuts = Counter(
            "cortex_event_subscribers_cut",
            "Subscriptions ended because the subscriber fell too far behind.",
            registry=registry,
        )
        self._outbox = Gauge(
            "cortex_outbox_backlog_events",
            "Events in this replica's outbox waiting for the event log.",
            registry=registry,
        )
        self._ttft = Histogram(
            "cortex_model_time_to_first_token_seconds",
            "From a provider attempt's start to its first token.",
            ["provider"], buckets=SLOW_BUCKETS, registry=registry,
        )  # fmt: skip
        self._attempts = Counter(
            "cortex_model_attempts", "Provider attempts by outcome (ok or a failure reason).",
            ["provider", "outcome"], registry=registry,
        )  # fmt: skip
        self._model_failures = Counter(
            "cortex_model_failures", "Failed provider attempts by reason.",
            ["provider", "reason"], registry=registry,
        )  # fmt: skip
        self._tokens = Counter(
            "cortex_model_tokens", "Tokens used, by provider and kind (input, output).",
            ["provider", "kind"], registry=registry,
        )  # fmt: skip
        self._breaker = Gauge(
            "cortex_model_breaker_state",
            "1 for the state each provider's circuit is in (closed, half_open, open), else 0.",
            ["provider", "state"], registry=registry,
        )  # fmt: skip
        self._tool_seconds = Histogram(
            "cortex_tool_call_duration_seconds", "Tool call duration by server and outcome.",
            ["server", "outcome"], buckets=SLOW_BUCKETS, registry=registry,
        )  # fmt: skip
        self._tool_failures = Counter(
            "cortex_tool_call_failures", "Failed tool calls by server and reason.",
            ["server", "reason"], registry=registry,
        )  # fmt: skip
        self._task_depth = Gauge(
            "cortex_task_queue_depth", "Tasks queued and not claimed.", registry=registry
        )
        self._task_claim = Histogram(
            "cortex_task_claim_latency_seconds",
            "From a task becoming claimable to a worker claiming it.",
            ["expert"], buckets=SLOW_BUCKETS, registry=registry,
        )  # fmt: skip
        self._task_attempts = Counter(
            "cortex_task_attempts", "Task attempts by expert and outcome.",
            ["expert", "outcome"], registry=registry,
        )  # fmt: skip
        self._task_failures = Counter(
            "cortex_task_failures", "Tasks that ended FAILED, by expert.",
            ["expert"], registry=registry,
        )  # fmt: skip
        # Per method: (ok counter child, histogram child); other codes by (method, code).
        self._rpc_children: dict[str, tuple[Any, Any]] = {}
        self._rpc_codes: dict[tuple[str, str], Any] = {}

    def rpc_finished(self, method: str, code: str, seconds: float) -> None:
        children = self._rpc_children.get(method)
        if children is None:
            children = self._rpc_children[method] = (
                self._rpcs.labels(method, "OK"),
                self._rpc_seconds.labels(method),
            )
        ok, histogram = children
        histogram.observe(seconds)
        if code == "OK":
            ok.inc()
            return
        counter = self._rpc_codes.get((method, code))
        if counter is None:
            counter = self._rpc_codes[method, code] = self._rpcs.labels(method, code)
        counter.inc()

    def stream_opened(self, method: str) -> None:
        self._streams.labels(method).inc()

    def stream_closed(self, method: str) -> None:
        self._streams.labels(method).dec()

    def event_delivered(self, lag_seconds: float) -> None:
        self._event_lag.observe(max(lag_seconds, 0.0))

    def subscriber_cut(self) -> None:
        self._cuts.inc()

    def outbox_backlog(self, events: int) -> None:
        self._outbox.set(events)

    def model_attempt(self, provider: str, outcome: str, first_token_seconds: float | None) -> None:
        self._attempts.labels(provider, outcome).inc()
        if outcome != "ok":
            self._model_failures.labels(provider, outcome).inc()
        if first_token_seconds is not None:
            self._ttft.labels(provider).observe(first_token_seconds)

    def model_tokens(self, provider: str, kind: str, count: int) -> None:
        if count > 0:
            self._tokens.labels(provider, kind).inc(count)

    def breaker_state(self, provider: str, state: str) -> None:
        for known in BREAKER_STATES:
            self._breaker.labels(provider, known).set(1 if known == state else 0)

    def tool_call(self, server: str, outcome: str, seconds: float) -> None:
        self._tool_seconds.labels(server, outcome).observe(seconds)
        if outcome != "ok":
            self._tool_failures.labels(server, outcome).inc()

    def task_queue_depth(self, tasks: int) -> None:
        self._task_depth.set(tasks)

    def task_claimed(self, expert: str, wait_seconds: float) -> None:
        self._task_claim.labels(expert).observe(max(wait_seconds, 0.0))

    def task_attempt(self, expert: str, outcome: str) -> None:
        self._task_attempts.labels(expert, outcome).inc()
        if outcome == "failed":
            self._task_failures.labels(expert).inc()

    def watch_pool(self, name: str, read: Callable[[], dict[str, int]]) -> None:
        """``cortex_db_pool_connections{pool, state}``, read at scrape time (on the
        scrape thread: ``read`` must only read counters)."""
        gauge = Gauge(
            "cortex_db_pool_connections",
            "Database pool connections by state (checked_out, idle, overflow, size).",
            ["pool", "state"], registry=self.registry,
        )  # fmt: skip
        for state in ("checked_out", "idle", "overflow", "size"):
            gauge.labels(name, state).set_function(
                lambda state=state: float(read().get(state, 0))  # type: ignore[misc]
            )


class MetricsEndpoint:
    """A running ``/metrics`` HTTP server; :meth:`close` stops it."""

    def __init__(self, server: Any, thread: Any) -> None:
        self._server = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(address: str, registry: CollectorRegistry) -> MetricsEndpoint:
    """Serve ``registry`` at ``http://address/metrics`` (port 0 picks one); raise
    ``OSError`` when the address is taken."""
    host, _, port = address.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    return MetricsEndpoint(server, thread)
