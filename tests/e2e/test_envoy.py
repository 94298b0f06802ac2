"""Envoy gives browsers gRPC-Web: envoy/envoy.yaml in front of a real ``cortex-core serve``.

Envoy runs from the committed config with three things changed: the listener and admin
ports are 0 (Envoy picks free ones and reports them, so nothing races for a port) and the
upstream is the test server. Calls are made the way a browser makes them: gRPC-Web frames
over HTTP/1.1, with an ``Origin`` header.
"""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Iterator

import pytest
from grpc_health.v1 import health_pb2
from support.envoy import CONFIG, ENVOY, RunningEnvoy, http_get, running_envoy
from support.grpc_web import ALLOWED_ORIGIN, DATA_FRAME, grpc_web_call

DISALLOWED_ORIGIN = "http://evil.example"


@pytest.fixture(scope="module")
def envoy(server_address: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEnvoy]:
    """Envoy from envoy/envoy.yaml in front of the session's server; always stopped."""
    with running_envoy(server_address, tmp_path_factory.mktemp("envoy")) as running:
        yield running


def _preflight(listener: str, origin: str) -> http.client.HTTPResponse:
    host, port = listener.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "OPTIONS",
            "/grpc.health.v1.Health/Check",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type,x-grpc-web,"
                "x-user-agent,grpc-timeout,x-request-id",
            },
        )
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def test_the_committed_envoy_config_passes_envoys_own_validation() -> None:
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(CONFIG), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


def test_envoy_reports_the_server_healthy_by_active_grpc_health_checks(
    envoy: RunningEnvoy, server_address: str
) -> None:
    clusters = http_get(envoy.admin, "/clusters").splitlines()
    assert f"cortex::{server_address}::health_flags::healthy" in clusters


def test_a_browser_health_check_through_envoy_answers_serving_with_grpc_status_ok(
    envoy: RunningEnvoy,
) -> None:
    request = health_pb2.HealthCheckRequest(service="").SerializeToString()

    reply = grpc_web_call(envoy.listener, "/grpc.health.v1.Health/Check", request)

    assert reply.http_status == 200, envoy.logs()
    assert reply.headers["content-type"].startswith("application/grpc-web")
    assert len(reply.messages) == 1
    response = health_pb2.HealthCheckResponse.FromString(reply.messages[0])
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert reply.trailers["grpc-status"] == "0"
    assert reply.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "grpc-status" in reply.headers["access-control-expose-headers"].split(",")
    assert reply.headers["x-request-id"]


def test_a_browser_health_check_for_an_unknown_service_answers_not_found_through_envoy(
    envoy: RunningEnvoy,
) -> None:
    request = health_pb2.HealthCheckRequest(service="no.such.Service").SerializeToString()

    reply = grpc_web_call(envoy.listener, "/grpc.health.v1.Health/Check", request)

    assert reply.http_status == 200, envoy.logs()
    assert reply.messages == []
    assert reply.grpc_status == "5"


def test_a_browser_server_stream_through_envoy_delivers_a_frame_before_the_stream_ends(
    envoy: RunningEnvoy,
) -> None:
    host, port = envoy.listener.rsplit(":", 1)
    request = health_pb2.HealthCheckRequest(service="").SerializeToString()
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(
            "POST",
            "/grpc.health.v1.Health/Watch",
            body=bytes([DATA_FRAME]) + len(request).to_bytes(4, "big") + request,
            headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        )
        response = connection.getresponse()
        # Watch never ends on its own: the first frame must arrive without the stream closing.
        header = response.read(5)
        payload = response.read(int.from_bytes(header[1:], "big"))
    finally:
        connection.close()

    assert response.status == 200, envoy.logs()
    assert header[0] == DATA_FRAME
    watched = health_pb2.HealthCheckResponse.FromString(payload)
    assert watched.status == health_pb2.HealthCheckResponse.SERVING


def test_a_preflight_from_an_allowed_origin_is_allowed_and_exposes_grpc_status(
    envoy: RunningEnvoy,
) -> None:
    response = _preflight(envoy.listener, ALLOWED_ORIGIN)

    assert response.status == 200
    assert response.getheader("access-control-allow-origin") == ALLOWED_ORIGIN
    allowed = response.getheader("access-control-allow-headers", "").split(",")
    for header in ("authorization", "content-type", "x-grpc-web", "x-user-agent"):
        assert header in allowed
    assert "POST" in response.getheader("access-control-allow-methods", "")
    exposed = response.getheader("access-control-expose-headers", "").split(",")
    assert {"grpc-status", "grpc-message", "grpc-status-details-bin"} <= set(exposed)


def test_a_preflight_from_another_origin_gets_no_allow_origin_header(envoy: RunningEnvoy) -> None:
    response = _preflight(envoy.listener, DISALLOWED_ORIGIN)

    assert response.getheader("access-control-allow-origin") is None
