"""What a draining in-process server tells calls that outlive the grace."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.experts.v1 import expert_service_pb2 as pb
from cortex.experts.v1 import expert_service_pb2_grpc as pb_grpc
from support.clients import Client, authenticated_channel
from support.inprocess import running_app
from support.rpc import details


class EndlessExperts(pb_grpc.ExpertServiceServicer):
    """GetExpert never finishes on its own."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def GetExpert(self, request: Any, context: Any) -> Any:
        self.started.set()
        await asyncio.Event().wait()


async def test_a_unary_call_past_the_grace_ends_unavailable_with_retry_info(
    tmp_path: Path,
) -> None:
    servicer = EndlessExperts()
    async with running_app(
        tmp_path, {"cortex.experts.v1.ExpertService": servicer}, shutdown_grace=1.0
    ) as running:
        client = Client(running.address)
        account = await client.register()
        await client.close()
        async with authenticated_channel(running.address, account.access_token) as channel:
            stub = pb_grpc.ExpertServiceStub(channel)
            call = asyncio.ensure_future(stub.GetExpert(pb.GetExpertRequest(name="experts/x")))
            await asyncio.wait_for(servicer.started.wait(), 10)
            await running.drain()
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                await call
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(ended.value)["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"
    assert "RetryInfo" in details(ended.value)
