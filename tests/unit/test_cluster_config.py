"""The Envoy config ``cortex-core cluster`` renders from envoy/envoy.yaml."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cortex_core.cluster import ClusterError, Options, render_envoy, replica_environment

TEMPLATE = (Path(__file__).resolve().parents[2] / "envoy" / "envoy.yaml").read_text()
UPSTREAMS = ["127.0.0.1:50051", "127.0.0.1:50052", "10.0.0.7:6000"]


def test_every_replica_becomes_one_endpoint_of_the_one_cluster() -> None:
    rendered = render_envoy(
        TEMPLATE, listener="0.0.0.0:8443", admin="127.0.0.1:9902", upstreams=UPSTREAMS
    )

    # One endpoint per replica in place of the server's (the console's cluster keeps its own).
    assert rendered.count("- endpoint:") == TEMPLATE.count("- endpoint:") - 1 + len(UPSTREAMS)
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


def options(tmp_path: Path) -> Options:
    return Options(
        replicas=2,
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/cortex",
        redis_url="redis://127.0.0.1:6379/0",
        base_port=0,
        metrics_base_port=0,
        listen="127.0.0.1:0",
        admin="127.0.0.1:0",
        directory=tmp_path,
        envoy="envoy",
        envoy_template=Path("envoy/envoy.yaml"),
        cortex="cortex-core",
    )


def test_replicas_share_one_signing_key_kept_in_a_file_only_its_owner_reads(
    tmp_path: Path,
) -> None:
    first = replica_environment(options(tmp_path), tmp_path, {"CORTEX_LOG_LEVEL": "DEBUG"})
    again = replica_environment(options(tmp_path), tmp_path, {})

    key_file = Path(first["CORTEX_JWT_SECRET_FILE"])
    assert again["CORTEX_JWT_SECRET_FILE"] == str(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_text().strip()) >= 32
    assert "CORTEX_JWT_SECRET" not in first  # the key itself is in no environment
    assert first["CORTEX_LOG_LEVEL"] == "DEBUG"  # the caller's settings reach every replica
    assert first["CORTEX_DATABASE_URL"].endswith("/cortex")
    assert first["CORTEX_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert first["CORTEX_TRUSTED_PROXIES"] == "127.0.0.1/32"


def test_a_signing_key_or_proxies_the_caller_chose_are_kept(tmp_path: Path) -> None:
    chosen = {"CORTEX_JWT_SECRET_FILE": "/run/secrets/jwt", "CORTEX_TRUSTED_PROXIES": "10.0.0.0/8"}

    env = replica_environment(options(tmp_path), tmp_path, chosen)

    assert env["CORTEX_JWT_SECRET_FILE"] == "/run/secrets/jwt"
    assert env["CORTEX_TRUSTED_PROXIES"] == "10.0.0.0/8"
    assert not (tmp_path / "jwt-secret").exists()
