"""Hostile input over the wire: refused at the edge with INVALID_ARGUMENT and a field
violation, on SQLite and PostgreSQL, never INTERNAL (the generated cases are in
``test_fuzz_wire.py``; these are the ones found from outside, pinned down)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import memory_pb2 as mpb
from cortex.context.v1 import memory_service_pb2 as pb
from cortex.context.v1.memory_service_pb2_grpc import MemoryServiceStub
from google.protobuf import duration_pb2
from support.clients import PASSWORD, Account, Client, auth_pb
from support.inprocess import running_app
from support.rpc import details


@dataclass
class Server:
    client: Client
    account: Account
    workspace: str


@pytest.fixture
async def server(db_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    async with running_app(tmp_path, database_url=db_url) as running:
        client = Client(running.address)
        try:
            account = await client.register()
            workspace = await client.first_workspace(account)
            yield Server(client, account, workspace.name)
        finally:
            await client.close()


async def _refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert details(error)["ErrorInfo"].reason == "INVALID_ARGUMENT"
    return {v.field: v.reason for v in details(error)["BadRequest"].field_violations}


async def test_a_nul_in_login_or_register_is_refused_naming_the_field(server: Server) -> None:
    login = await _refusal(
        server.client.auth.Login(auth_pb.LoginRequest(email="a\x00@example.com", password="x"))
    )
    register = await _refusal(
        server.client.auth.Register(
            auth_pb.RegisterRequest(
                email="nul@example.com", password=PASSWORD, display_name="Ada\x00"
            )
        )
    )

    assert _violations(login) == {"email": "INVALID_CHARACTER"}
    assert _violations(register) == {"display_name": "INVALID_CHARACTER"}


@pytest.mark.parametrize(
    "ttl",
    [
        duration_pb2.Duration(seconds=2**63 - 1),
        duration_pb2.Duration(seconds=-(2**63)),
        duration_pb2.Duration(seconds=1, nanos=2_000_000_000),
        duration_pb2.Duration(seconds=5, nanos=-5),
    ],
    ids=["huge", "hugely-negative", "nanos-out-of-range", "mixed-signs"],
)
async def test_an_extreme_memory_ttl_is_refused_naming_the_field(
    server: Server, ttl: duration_pb2.Duration
) -> None:
    memories = MemoryServiceStub(server.client.channel)
    request = pb.CreateMemoryRequest(
        parent=server.workspace,
        memory=mpb.Memory(content="remember this", kind=mpb.MEMORY_KIND_FACT, ttl=ttl),
    )

    refused = await _refusal(memories.CreateMemory(request, metadata=server.account.metadata()))

    assert _violations(refused) == {"memory.ttl": "OUT_OF_RANGE"}


async def test_a_negative_memory_ttl_is_refused_naming_the_field(server: Server) -> None:
    memories = MemoryServiceStub(server.client.channel)
    request = pb.CreateMemoryRequest(
        parent=server.workspace,
        memory=mpb.Memory(
            content="remember this",
            kind=mpb.MEMORY_KIND_FACT,
            ttl=duration_pb2.Duration(seconds=-60),
        ),
    )

    refused = await _refusal(memories.CreateMemory(request, metadata=server.account.metadata()))

    assert "memory.ttl" in _violations(refused)


async def test_many_bad_fields_give_a_small_bounded_answer(server: Server) -> None:
    memories = MemoryServiceStub(server.client.channel)
    request = pb.CreateMemoryRequest(
        parent=server.workspace,
        memory=mpb.Memory(content="ok", source_messages=["x" * 1_000 + "\x00"] * 200),
    )

    refused = await _refusal(memories.CreateMemory(request, metadata=server.account.metadata()))

    violations = details(refused)["BadRequest"].field_violations
    assert len(violations) == 10
    assert all(len(v.field) < 64 and "xxxx" not in v.description for v in violations)
    assert len(refused.details()) < 300


async def test_bytes_that_do_not_parse_never_name_an_internal_class(server: Server) -> None:
    login = server.client.channel.unary_unary("/cortex.auth.v1.AuthService/Login")

    refused = await _refusal(login(b"\x00"))

    assert refused.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(refused)["ErrorInfo"].reason == "MALFORMED_REQUEST"
    assert "Error" not in refused.details()
