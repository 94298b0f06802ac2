"""Generated inputs to InvokeTool, over the wire, for built-in and MCP tools.

Whatever JSON object arrives as ``input``, the answer is an output, a tool failure
in ``error``, or INVALID_ARGUMENT whose every violation is under ``input``; never
INTERNAL or UNKNOWN, and an echo always echoes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cortex.experts.v1 import tool_service_pb2 as pb
from cortex.experts.v1 import tool_service_pb2_grpc as pb_grpc
from google.protobuf import json_format, struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.clients import Client
from support.inprocess import server_thread
from support.mcp import config, stdio_table
from support.rpc import details

from cortex_core.server import RunningServer

EXAMPLES_PER_BACKEND = 80
TOOLS = ["cortex.search_memories", "cortex.remember", "cortex.current_time", "local.echo"]

_JSON = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**53), 2**53) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)  # fmt: skip
_KEYS = st.sampled_from(["query", "limit", "kind", "content", "timezone", "text", "x"])
_VALUES = st.one_of(
    _JSON,
    st.sampled_from(["fact", "note", "UTC", "Europe/Paris", "the plant", "", " ", "a" * 5000]),
    st.integers(-3, 30),
)
_INPUTS = st.dictionaries(_KEYS | st.text(max_size=10), _VALUES, max_size=4)


async def _prepare(running: RunningServer) -> tuple[str, str]:
    client = Client(running.address)
    account = await client.register()
    workspace = (await client.first_workspace(account)).name
    await client.close()
    for _ in range(300):  # until the stdio server is listed
        if running.app.tool_invoker.get("local.echo") is not None:
            break
        await asyncio.sleep(0.05)
    return account.access_token, workspace


@contextlib.contextmanager
def _server(kind: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    servers = config(local=stdio_table(tmp_path / "record.txt"))
    with server_thread(kind, tmp_path, _prepare, mcp_config=servers) as (address, prepared):
        yield (address, *prepared)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    with _server(request.param, tmp_path_factory.mktemp(f"fuzz-tools-{request.param}")) as found:
        yield found


def test_no_generated_input_gets_internal_and_violations_stay_under_input(
    target: tuple[str, str, str],
) -> None:
    address, token, workspace = target
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.ToolServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)

    @settings(
        max_examples=EXAMPLES_PER_BACKEND,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.sampled_from(TOOLS), _INPUTS)
    def invoke(tool: str, arguments: dict[str, Any]) -> None:
        message = struct_pb2.Struct()
        message.update(arguments)
        request = pb.InvokeToolRequest(name=f"tools/{tool}", workspace=workspace, input=message)
        try:
            response = stub.InvokeTool(request, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            _check_refusal(tool, arguments, error)
            return
        if response.HasField("error"):
            assert tool == "cortex.current_time", (tool, arguments, response.error)
            return
        if tool == "local.echo":
            assert json_format.MessageToDict(response.output) == {"text": arguments["text"]}

    try:
        invoke()
    finally:
        channel.close()


def _check_refusal(tool: str, arguments: dict[str, Any], error: grpc.RpcError) -> None:
    code = error.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error.details()
    info = details(error)["ErrorInfo"]
    assert code is grpc.StatusCode.INVALID_ARGUMENT, (tool, arguments, code, info.reason)
    fields = [v.field for v in details(error)["BadRequest"].field_violations]
    assert fields, (tool, arguments)
    assert all(f == "input" or f.startswith("input.") for f in fields), fields
