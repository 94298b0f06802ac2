"""Traces and metrics of a real ``cortex-core serve`` process.

The test runs its own OTLP receiver (the collector's TraceService from the
``opentelemetry-proto`` package, on a grpc.aio server on port 0), points the
server at it with ``OTEL_EXPORTER_OTLP_ENDPOINT``, calls it with a W3C
``traceparent`` and checks the tree of spans that arrives, the trace id in the
JSON log lines, and the Prometheus series scraped over HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import conversation_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from cortex.experts.v1 import tool_service_pb2 as tpb
from cortex.experts.v1.tool_service_pb2_grpc import ToolServiceStub
from google.protobuf import struct_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from support.clients import Client
from support.databases import database_url, require_env
from support.servers import ServerProcess, cortex_server
from support.task_client import TERMINAL, TasksClient, until_state

SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
OBSERVABILITY_REDIS_DB = 12


@pytest.fixture(params=["sqlite", "postgresql+redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Server variables for SQLite alone, or PostgreSQL with Redis (a database of its own)."""
    kind = "sqlite" if request.param == "sqlite" else "postgresql"
    async with database_url(kind, tmp_path) as url:
        env = {"CORTEX_DATABASE_URL": url}
        if kind == "postgresql":
            shared = urlsplit(require_env("CORTEX_TEST_REDIS_URL"))
            env["CORTEX_REDIS_URL"] = urlunsplit(shared._replace(path=f"/{OBSERVABILITY_REDIS_DB}"))
            env["CORTEX_REGISTER_ADDRESS_ATTEMPTS"] = "1000000"
        yield env


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.resources: list[dict[str, str]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            self.resources.append(
                {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            )
            for scope in resource_spans.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    receiver = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver, port
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[ServerProcess]:
    with contextlib.ExitStack() as stack:
        server = await asyncio.to_thread(stack.enter_context, cortex_server(tmp_path, env))
        try:
            yield server
        finally:
            await asyncio.to_thread(server.terminate)


def traceparent(trace_id: str) -> tuple[str, list[tuple[str, str]]]:
    """A client span id under ``trace_id`` and the metadata carrying it."""
    span_id = os.urandom(8).hex()
    return span_id, [("traceparent", f"00-{trace_id}-{span_id}-01")]


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the series ``name`` whose labels include ``labels``."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_:]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no {name}{labels} in the scrape")


async def test_a_call_continues_the_callers_trace_with_sql_model_and_tool_children(
    tmp_path: Path, receiver: tuple[Receiver, int], backend: dict[str, str]
) -> None:
    spans, port = receiver
    env = {
        **backend,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        "CORTEX_METRICS_ADDRESS": "127.0.0.1:0",
        "CORTEX_LOG_FORMAT": "json",
    }
    trace_id = os.urandom(16).hex()
    async with serving(tmp_path, env) as server:
        client = Client(server.address)
        try:
            register_parent, metadata = traceparent(trace_id)
            account = await client.register(metadata=metadata)
            workspace = (await client.first_workspace(account)).name
            tool_parent, metadata = traceparent(trace_id)
            answer = await ToolServiceStub(client.channel).InvokeTool(
                tpb.InvokeToolRequest(
                    name="tools/cortex.current_time",
                    workspace=workspace,
                    input=struct_pb2.Struct(),
                ),
                metadata=account.metadata() + metadata,
                timeout=30,
            )
            assert answer.output
            conversations = cgrpc.ConversationServiceStub(client.channel)
            conversation = (
                await conversations.CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title="t")
                    ),
                    metadata=account.metadata(),
                    timeout=30,
                )
            ).conversation.name
            reply_parent, metadata = traceparent(trace_id)
            frames = [
                frame.WhichOneof("frame")
                async for frame in conversations.SendMessage(
                    cpb.SendMessageRequest(conversation=conversation, content="hello"),
                    metadata=account.metadata() + metadata,
                    timeout=30,
                )
            ]
            assert "completion" in frames
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await client.me(account, token="not-a-token")
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED

            address = re.search(r"metrics on (http://\S+/metrics)", server.logs())
            assert address is not None, server.logs()
            text = await asyncio.to_thread(scrape, address.group(1))
        finally:
            await client.close()
    # The server has exited: its provider flushed every span on the way out.
    by_id = {span.span_id.hex(): span for span in spans.spans}
    ours = [span for span in spans.spans if span.trace_id.hex() == trace_id]

    def server_span(parent: str) -> trace_pb2.Span:
        found = [s for s in ours if s.kind == SERVER and s.parent_span_id.hex() == parent]
        assert len(found) == 1, [(s.name, s.parent_span_id.hex()) for s in ours]
        return found[0]

    register = server_span(register_parent)
    invoke = server_span(tool_parent)
    reply = server_span(reply_parent)
    assert register.name == "/cortex.auth.v1.AuthService/Register"
    assert invoke.name == "/cortex.experts.v1.ToolService/InvokeTool"
    assert reply.name == "/cortex.context.v1.ConversationService/SendMessage"

    def children(parent: trace_pb2.Span) -> list[trace_pb2.Span]:
        return [s for s in ours if s.parent_span_id == parent.span_id]

    def attributes(span: trace_pb2.Span) -> dict[str, Any]:
        return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}

    sql = [
        s for s in children(register) if attributes(s).get("db.system") in ("sqlite", "postgresql")
    ]
    assert sql, [s.name for s in children(register)]
    redis_used = "CORTEX_REDIS_URL" in backend
    assert {attributes(s)["db.system"] for s in sql} == (
        {"postgresql"} if redis_used else {"sqlite"}
    )
    # The sign-up throttle lives in Redis when Redis is configured.
    redis = [s for s in children(register) if attributes(s).get("db.system") == "redis"]
    assert bool(redis) is redis_used, [s.name for s in children(register)]
    (tool,) = [s for s in children(invoke) if s.name == "tool.call"]
    assert {
        "cortex.tool": "cortex.current_time",
        "cortex.tool.server": "cortex",
        "outcome": "ok",
    }.items() <= attributes(tool).items()
    (attempt,) = [s for s in children(reply) if s.name == "llm.attempt"]
    attempt_attributes = attributes(attempt)
    assert attempt_attributes["gen_ai.system"] == "local-dev"
    assert attempt_attributes["outcome"] == "ok"
    assert attempt_attributes["gen_ai.usage.output_tokens"] > 0
    assert [e.name for e in attempt.events] == ["first_token"]
    assert all(s.parent_span_id.hex() in by_id or s.kind == SERVER for s in ours)
    assert {"service.name": "cortex-core", "deployment.environment": "test"}.items() <= (
        spans.resources[0].items()
    )

    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    (registered,) = [line for line in lines if line["message"] == "user registered"]
    assert registered["trace_id"] == trace_id
    assert registered["span_id"] == register.span_id.hex()
    serving_line = next(line for line in lines if line["message"] == "serving")
    assert "trace_id" not in serving_line  # written outside any span

    register_method = "/cortex.auth.v1.AuthService/Register"
    assert sample(text, "cortex_rpc_requests_total", method=register_method, code="OK") == 1
    assert sample(
        text, "cortex_rpc_requests_total",
        method="/cortex.auth.v1.AuthService/GetCurrentUser", code="UNAUTHENTICATED",
    ) == 1  # fmt: skip
    assert sample(text, "cortex_rpc_duration_seconds_count", method=register_method) == 1
    assert sample(
        text, "cortex_rpc_duration_seconds_bucket", method=register_method, le="+Inf"
    ) == 1  # fmt: skip
    send = "/cortex.context.v1.ConversationService/SendMessage"
    assert sample(text, "cortex_open_streams", method=send) == 0
    assert sample(text, "cortex_model_attempts_total", provider="local-dev", outcome="ok") == 1
    assert sample(text, "cortex_model_time_to_first_token_seconds_count", provider="local-dev") == 1
    assert sample(text, "cortex_model_tokens_total", provider="local-dev", kind="output") > 0
    assert (
        sample(text, "cortex_tool_call_duration_seconds_count", server="cortex", outcome="ok") == 1
    )
    assert sample(text, "cortex_model_breaker_state", provider="local-dev", state="closed") == 1
    assert sample(text, "cortex_model_breaker_state", provider="local-dev", state="open") == 0
    assert sample(text, "cortex_outbox_backlog_events") == 0
    assert sample(text, "cortex_db_pool_connections", pool="requests", state="checked_out") == 0


async def test_task_attempts_are_spans_linked_to_the_creating_call_and_the_runner_is_measured(
    tmp_path: Path, receiver: tuple[Receiver, int], backend: dict[str, str]
) -> None:
    spans, port = receiver
    env = {
        **backend,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "CORTEX_METRICS_ADDRESS": "127.0.0.1:0",
        "CORTEX_TASK_RETRY_BACKOFF": "0.1",
    }
    trace_id = os.urandom(16).hex()
    async with serving(tmp_path, env) as server:
        client = TasksClient(server.address)
        try:
            account = await client.register()
            workspace = str((await client.first_workspace(account)).name)
            create_parent, metadata = traceparent(trace_id)
            # Attempt 1 fails (retried), attempt 2 succeeds; the other task fails for good.
            retried = await client.create(account, workspace, "/fail 1", metadata=metadata)
            failed = await client.create(account, workspace, "/fail 1", max_attempts=1)
            for task in (retried, failed):
                await until_state(client, account, task.name, TERMINAL)
            address = re.search(r"metrics on (http://\S+/metrics)", server.logs())
            assert address is not None, server.logs()
            await asyncio.sleep(1.5)  # a sweep (every second) sets the queue depth
            text = await asyncio.to_thread(scrape, address.group(1))
        finally:
            await client.close()

    (create,) = [
        s for s in spans.spans
        if s.kind == SERVER and s.trace_id.hex() == trace_id
        and s.parent_span_id.hex() == create_parent
    ]  # fmt: skip
    assert create.name == "/cortex.experts.v1.ExpertService/CreateTask"

    def attributes(span: trace_pb2.Span) -> dict[str, Any]:
        return {a.key: a.value.string_value or a.value.int_value for a in span.attributes}

    attempts = sorted(
        (s for s in spans.spans if s.name == "task.attempt"
         and attributes(s).get("cortex.task") == retried.name),
        key=lambda s: attributes(s)["cortex.task.attempt"],
    )  # fmt: skip
    assert [attributes(s)["outcome"] for s in attempts] == ["retried", "succeeded"]
    for attempt in attempts:
        assert attempt.trace_id.hex() != trace_id  # its own trace, linked to the creator
        assert [(link.trace_id.hex(), link.span_id) for link in attempt.links] == [
            (trace_id, create.span_id)
        ]
        assert attributes(attempt)["cortex.expert"] == "echo"
    models = [
        s for s in spans.spans
        if s.name == "llm.attempt" and s.parent_span_id == attempts[1].span_id
    ]  # fmt: skip
    assert len(models) == 1  # the model call of the attempt is its child
    (other,) = [
        s for s in spans.spans
        if s.name == "task.attempt" and attributes(s).get("cortex.task") == failed.name
    ]  # fmt: skip
    # Created without a caller's trace: linked to its CreateTask's own (root) server span.
    (link,) = other.links
    by_id = {span.span_id: span for span in spans.spans}
    assert link.trace_id.hex() != trace_id
    assert by_id[link.span_id].name == "/cortex.experts.v1.ExpertService/CreateTask"

    assert sample(text, "cortex_task_attempts_total", expert="echo", outcome="succeeded") == 1
    assert sample(text, "cortex_task_attempts_total", expert="echo", outcome="retried") == 1
    assert sample(text, "cortex_task_attempts_total", expert="echo", outcome="failed") == 1
    assert sample(text, "cortex_task_failures_total", expert="echo") == 1
    assert sample(text, "cortex_task_claim_latency_seconds_count", expert="echo") == 3
    assert sample(text, "cortex_task_queue_depth") == 0
