"""``cortex-core serve`` as a user runs it: a real process on a real port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from cortex.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support.databases import postgres_database
from support.rpc import details
from support.servers import CORTEX, ServerProcess, cortex_server

import cortex_core.api.registry as registry
from cortex_core.api.interceptors import PUBLIC_METHODS

CONTRACT_SERVICES = {
    "cortex.auth.v1.AuthService",
    "cortex.sessions.v1.SessionService",
    "cortex.sessions.v1.WorkspaceService",
    "cortex.context.v1.ConversationService",
    "cortex.context.v1.ContextService",
    "cortex.context.v1.MemoryService",
    "cortex.events.v1.EventService",
    "cortex.experts.v1.ExpertService",
    "cortex.experts.v1.ToolService",
}


def _health(address: str, service: str = "") -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status)


UNBUILT_SERVICES: set[str] = set()


def test_health_is_serving_for_built_services_and_not_for_unimplemented_ones(
    server_address: str,
) -> None:
    assert _health(server_address) == health_pb2.HealthCheckResponse.SERVING
    for service in CONTRACT_SERVICES - UNBUILT_SERVICES:
        assert _health(server_address, service) == health_pb2.HealthCheckResponse.SERVING
    for service in UNBUILT_SERVICES:  # their RPCs answer UNIMPLEMENTED
        assert _health(server_address, service) == health_pb2.HealthCheckResponse.NOT_SERVING


def test_reflection_lists_every_service_in_the_contract(server_address: str) -> None:
    with grpc.insecure_channel(server_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        listed = {s.name for r in responses for s in r.list_services_response.service}
    assert CONTRACT_SERVICES | {"grpc.health.v1.Health"} <= listed


def test_reflection_serves_the_file_that_defines_a_service(server_address: str) -> None:
    with grpc.insecure_channel(server_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="cortex.auth.v1.AuthService"
        )
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert response.file_descriptor_response.file_descriptor_proto


def _register(channel: grpc.Channel) -> str:
    request = auth_service_pb2.RegisterRequest(
        email=f"probe-{uuid.uuid4().hex[:8]}@example.com",
        password="correct horse battery staple 42",
        display_name="Probe",
    )
    response = auth_service_pb2_grpc.AuthServiceStub(channel).Register(request, timeout=30)
    return str(response.access_token)


def test_cortex_rpcs_need_a_token_and_unbuilt_ones_say_unimplemented(server_address: str) -> None:
    assert set(registry.service_names()) == CONTRACT_SERVICES  # also loads the descriptors
    pool = descriptor_pool.Default()
    with grpc.insecure_channel(server_address) as channel:
        token = _register(channel)
        unimplemented = 0
        for name in CONTRACT_SERVICES:
            for method in pool.FindServiceByName(name).methods:
                path = f"/{name}/{method.name}"
                public = path in PUBLIC_METHODS
                with_token = [("authorization", f"Bearer {token}")]
                # Logout would end the session the rest of this walk relies on.
                runs = [[]] if method.name == "Logout" else [[], with_token]
                for metadata in runs:
                    call = (
                        channel.unary_stream(path)
                        if method.server_streaming
                        else channel.unary_unary(path)
                    )
                    try:
                        result = call(b"", metadata=metadata, timeout=2)
                        if method.server_streaming:
                            next(iter(result))
                        continue
                    except grpc.RpcError as error:
                        code = error.code()
                        info = details(error).get("ErrorInfo")
                    if code is grpc.StatusCode.DEADLINE_EXCEEDED and method.server_streaming:
                        continue  # a stream that opened and stayed open (e.g. events)
                    assert info is not None, path
                    assert info.domain == "cortex", path
                    if not metadata and not public:
                        assert code is grpc.StatusCode.UNAUTHENTICATED, path
                    elif code is grpc.StatusCode.UNIMPLEMENTED:
                        assert info.reason == "NOT_IMPLEMENTED"
                        unimplemented += 1
                    assert code is not grpc.StatusCode.UNKNOWN, path
    assert unimplemented == 0  # every service of the contract is built now


@pytest.mark.parametrize(
    "method",
    ["/grpc.health.v1.Health/Check", "/cortex.auth.v1.AuthService/Login"],
)
def test_request_bytes_that_do_not_parse_are_invalid_argument(
    server_address: str, method: str
) -> None:
    with grpc.insecure_channel(server_address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(method)(b"\xff\xff\xff\xff", timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(caught.value)["ErrorInfo"].reason == "MALFORMED_REQUEST"


def test_every_call_is_written_to_the_json_access_log(server_process: ServerProcess) -> None:
    _ = _health(server_process.address)
    with grpc.insecure_channel(server_process.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(
            health_pb2.HealthCheckRequest(), metadata=[("x-request-id", "trace-me-42")], timeout=5
        )
    deadline = time.monotonic() + 5
    record = None
    while record is None and time.monotonic() < deadline:
        for line in server_process.logs().splitlines():
            if "trace-me-42" in line:
                record = json.loads(line)
        time.sleep(0.05)
    assert record is not None
    assert record["method"] == "/grpc.health.v1.Health/Check"
    assert record["code"] == "OK"
    assert record["duration_ms"] >= 0
    assert record["peer"].startswith("ipv4:127.0.0.1:")
    assert record["level"] == "INFO"


def test_sigterm_drains_streams_and_exits_zero(tmp_path: Path) -> None:
    with cortex_server(tmp_path, {"CORTEX_SHUTDOWN_GRACE": "5"}) as server:
        channel = grpc.insecure_channel(server.address)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=30
        )
        first = next(watch)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        statuses = []
        with pytest.raises(grpc.RpcError) as ended:
            for frame in watch:
                statuses.append(frame.status)
        code = server.process.wait(timeout=15)
        elapsed = time.monotonic() - started
        channel.close()
    assert code == 0
    assert elapsed < 5 + 2
    # Watchers may see NOT_SERVING first; either way the stream is told to go away.
    assert set(statuses) <= {health_pb2.HealthCheckResponse.NOT_SERVING}
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(ended.value)["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"
    assert "RetryInfo" in details(ended.value)
    assert "draining" in server.logs()


def test_with_tracing_on_the_health_watch_still_works(tmp_path: Path) -> None:
    env = {"CORTEX_TRACING": "true", "OTEL_TRACES_EXPORTER": "none"}
    with cortex_server(tmp_path, env) as server:
        with grpc.insecure_channel(server.address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
            first = next(watch)
            watch.cancel()
        assert server.terminate() == 0
    assert first.status == health_pb2.HealthCheckResponse.SERVING


def test_the_server_serves_on_postgresql(tmp_path: Path) -> None:
    import asyncio

    async def run() -> None:
        async with postgres_database() as url:
            await asyncio.to_thread(_serve_and_check, tmp_path, url)

    asyncio.run(run())


def _serve_and_check(tmp_path: Path, url: str) -> None:
    with cortex_server(tmp_path, {"CORTEX_DATABASE_URL": url}) as server:
        assert _health(server.address) == health_pb2.HealthCheckResponse.SERVING
        assert server.terminate() == 0


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    return subprocess.run(
        [str(CORTEX), *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CORTEX_GRPC_ADDRESS", "no-port-here"),
        ("CORTEX_LOG_FORMAT", "xml"),
        ("CORTEX_DATABASE_URL", "mysql://root@localhost/x"),
        ("CORTEX_SHUTDOWN_GRACE", "-3"),
    ],
)
def test_a_bad_setting_stops_the_start_and_names_the_variable(variable: str, value: str) -> None:
    result = _cli("serve", env={variable: value})
    assert result.returncode == 2
    assert variable in result.stderr


def test_help_documents_every_command_and_setting() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for word in ("serve", "migrate", "CORTEX_GRPC_ADDRESS", "CORTEX_DATABASE_URL"):
        assert word in result.stdout


def test_migrate_applies_migrations_and_exits(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'cortex.db'}"
    result = _cli("migrate", env={"CORTEX_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "db" / "cortex.db") as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"users", "workspaces", "workspace_members", "sessions"} <= tables
    assert journal == "wal"


def test_python_module_entry_point_matches_console_script() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cortex_core", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("cortex-core ")
