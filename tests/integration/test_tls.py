"""The server speaks TLS, and mTLS with a client CA, using a CA the test makes."""

from __future__ import annotations

from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.certificates import Authority
from support.inprocess import running_app

from cortex_core.settings import Settings

SERVING = health_pb2.HealthCheckResponse.SERVING


def tls_settings(tmp_path: Path, *, client_ca: Path | None = None) -> dict[str, object]:
    authority = Authority(tmp_path / "pki")
    server = authority.issue("server", server=True)
    environ = {
        "CORTEX_TLS_CERT_FILE": str(server.cert),
        "CORTEX_TLS_KEY_FILE": str(server.key),
        **({"CORTEX_TLS_CLIENT_CA_FILE": str(client_ca)} if client_ca else {}),
    }
    settings = Settings.from_env(environ)
    return {
        "tls_cert_file": settings.tls_cert_file,
        "tls_key_file": settings.tls_key_file,
        "tls_client_ca_file": settings.tls_client_ca_file,
        "_authority": authority,
    }


async def check(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(response.status)


async def test_a_client_trusting_the_ca_calls_over_tls(tmp_path: Path) -> None:
    values = tls_settings(tmp_path)
    authority = values.pop("_authority")
    assert isinstance(authority, Authority)
    async with running_app(tmp_path, **values) as server:
        port = server.address.rpartition(":")[2]
        trusted = grpc.ssl_channel_credentials(root_certificates=authority.cert_pem)
        async with grpc.aio.secure_channel(f"localhost:{port}", trusted) as channel:
            assert await check(channel) == SERVING
        # Plaintext gets nowhere on a TLS port.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await check(channel)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        # Nor does a client that does not trust the server's CA.
        stranger = Authority(tmp_path / "other", "Other CA")
        untrusted = grpc.ssl_channel_credentials(root_certificates=stranger.cert_pem)
        async with grpc.aio.secure_channel(f"localhost:{port}", untrusted) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await check(channel)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_admits_a_client_certificate_from_the_ca_and_refuses_the_rest(
    tmp_path: Path,
) -> None:
    clients = Authority(tmp_path / "clients", "Client CA")
    values = tls_settings(tmp_path, client_ca=clients.cert)
    authority = values.pop("_authority")
    assert isinstance(authority, Authority)
    good = clients.issue("backend", server=False)
    rogue = Authority(tmp_path / "rogue", "Rogue CA").issue("intruder", server=False)
    async with running_app(tmp_path, **values) as server:
        target = f"localhost:{server.address.rpartition(':')[2]}"
        admitted = grpc.ssl_channel_credentials(
            root_certificates=authority.cert_pem,
            private_key=good.key_pem,
            certificate_chain=good.cert_pem,
        )
        async with grpc.aio.secure_channel(target, admitted) as channel:
            assert await check(channel) == SERVING
        without = grpc.ssl_channel_credentials(root_certificates=authority.cert_pem)
        signed_elsewhere = grpc.ssl_channel_credentials(
            root_certificates=authority.cert_pem,
            private_key=rogue.key_pem,
            certificate_chain=rogue.cert_pem,
        )
        for credentials in (without, signed_elsewhere):
            async with grpc.aio.secure_channel(target, credentials) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await check(channel)
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
