"""The Envoy config ``cortex-core cluster`` renders from envoy/envoy.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from cortex_core.cluster import ClusterError, render_envoy

TEMPLATE = (Path(__file__).resolve().parents[2] / "envoy" / "envoy.yaml").read_text()
UPSTREAMS = ["127.0.0.1:50051", "127.0.0.1:50052", "10.0.0.7:6000"]


def test_every_replica_becomes_one_endpoint_of_the_one_cluster() -> None:
    rendered = render_envoy(
        TEMPLATE, listener="0.0.0.0:8443", admin="127.0.0.1:9902", upstreams=UPSTREAMS
    )

    assert rendered.count("- endpoint:") == len(UPSTREAMS)
    for upstream in UPSTREAMS:
        host, port = upstream.split(":")
        assert f"socket_address: {{ address: {host}, port_value: {port} }}" in rendered
    assert "{ address: 0.0.0.0, port_value: 8443 }" in rendered
    assert "{ address: 127.0.0.1, port_value: 9902 }" in rendered
    # Everything else (health checks, retries, timeouts) is the template's.
    assert rendered.count("grpc_health_check") == TEMPLATE.count("grpc_health_check") == 1
    assert "retry_policy" in rendered
    assert "stream_idle_timeout: 300s" in rendered


def test_a_template_without_the_single_endpoint_is_refused() -> None:
    moved = TEMPLATE.replace("port_value: 50051", "port_value: 50099")

    with pytest.raises(ClusterError, match="exactly one endpoint"):
        render_envoy(moved, listener="127.0.0.1:0", admin="127.0.0.1:0", upstreams=UPSTREAMS)


def test_no_replica_is_refused() -> None:
    with pytest.raises(ClusterError, match="at least one"):
        render_envoy(TEMPLATE, listener="127.0.0.1:0", admin="127.0.0.1:0", upstreams=[])
