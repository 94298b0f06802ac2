"""Domain errors reach clients as the right status with google.rpc details,
whether raised by a unary handler or in the middle of a stream."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.experts.v1 import expert_service_pb2 as pb
from cortex.experts.v1 import expert_service_pb2_grpc as pb_grpc
from cortex.experts.v1 import task_pb2
from support.clients import Client, authenticated_channel
from support.inprocess import running_app
from support.rpc import details

from cortex_core import errors

EXPERTS = "cortex.experts.v1.ExpertService"


class ScriptedExperts(pb_grpc.ExpertServiceServicer):
    """A test double whose behaviour is chosen per test."""

    def __init__(self) -> None:
        self.unary_error: BaseException | None = None
        self.stream_error: BaseException | None = None
        self.release = asyncio.Event()
        self.stream_release = asyncio.Event()
        self.started = asyncio.Event()

    async def ListExperts(self, request: Any, context: Any) -> Any:
        if self.unary_error is not None:
            raise self.unary_error
        return pb.ListExpertsResponse()

    async def GetExpert(self, request: Any, context: Any) -> Any:
        self.started.set()
        await self.release.wait()
        return pb.GetExpertResponse()

    async def WatchTask(self, request: Any, context: Any) -> Any:
        yield pb.WatchTaskResponse(task=task_pb2.Task(name=request.name))
        self.started.set()
        if self.stream_error is not None:
            raise self.stream_error
        await self.stream_release.wait()


@pytest.fixture
async def experts(tmp_path: Path) -> Any:
    servicer = ScriptedExperts()
    # A short grace: the scripted WatchTask does not use the task-watch hub, so the drain
    # ends it only when the grace is nearly over (as it does any stream it cannot tell).
    async with running_app(tmp_path, {EXPERTS: servicer}, shutdown_grace=2.0) as running:
        client = Client(running.address)
        account = await client.register()
        await client.close()
        async with authenticated_channel(running.address, account.access_token) as channel:
            yield servicer, pb_grpc.ExpertServiceStub(channel), running


async def _unary_error(experts: Any, error: BaseException) -> grpc.aio.AioRpcError:
    servicer, stub, _ = experts
    servicer.unary_error = error
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListExperts(pb.ListExpertsRequest(), timeout=5)
    return caught.value


async def test_not_found_carries_error_info_in_the_cortex_domain(experts: Any) -> None:
    error = await _unary_error(experts, errors.NotFound("expert not found"))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "expert not found"
    info = details(error)["ErrorInfo"]
    assert (info.reason, info.domain) == ("NOT_FOUND", "cortex")


async def test_invalid_input_lists_each_field_violation(experts: Any) -> None:
    error = await _unary_error(
        experts,
        errors.InvalidArgument(
            "bad request",
            [
                errors.FieldViolation("page_size", "must not be negative"),
                errors.FieldViolation("filter", "unknown field 'x'"),
            ],
            reason="BAD_LIST_REQUEST",
        ),
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = details(error)["BadRequest"].field_violations
    assert [(v.field, v.description) for v in violations] == [
        ("page_size", "must not be negative"),
        ("filter", "unknown field 'x'"),
    ]
    assert details(error)["ErrorInfo"].reason == "BAD_LIST_REQUEST"


async def test_throttling_says_when_to_retry(experts: Any) -> None:
    error = await _unary_error(experts, errors.ResourceExhausted("slow down", retry_after=2.5))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    delay = details(error)["RetryInfo"].retry_delay
    assert (delay.seconds, delay.nanos) == (2, 500_000_000)


async def test_every_unavailable_says_when_to_retry_even_without_a_known_delay(
    experts: Any,
) -> None:
    error = await _unary_error(
        experts, errors.Unavailable("the database is down", reason="DATABASE_UNAVAILABLE")
    )

    assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert details(error)["RetryInfo"].retry_delay.seconds >= 1


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.PermissionDenied("x"), grpc.StatusCode.PERMISSION_DENIED),
        (errors.Unauthenticated("x"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.Aborted("x"), grpc.StatusCode.ABORTED),
        (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_each_domain_error_has_its_own_code(
    experts: Any, error: errors.CortexError, code: grpc.StatusCode
) -> None:
    assert (await _unary_error(experts, error)).code() is code


async def test_an_unexpected_exception_is_internal_with_no_detail_leaked(
    experts: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="cortex.errors"):
        error = await _unary_error(experts, ZeroDivisionError("secret internals"))
    assert error.code() is grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"
    assert "ZeroDivision" not in error.debug_error_string()
    request_id = details(error)["ErrorInfo"].metadata["request_id"]
    assert request_id
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert logged
    assert logged[0].exc_info is not None


async def test_an_error_raised_mid_stream_keeps_its_code_and_details(experts: Any) -> None:
    servicer, stub, _ = experts
    servicer.stream_error = errors.PermissionDenied("access revoked", reason="ACCESS_REVOKED")
    frames = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for frame in stub.WatchTask(pb.WatchTaskRequest(name="workspaces/w/tasks/t")):
            frames.append(frame)
    assert [f.task.name for f in frames] == ["workspaces/w/tasks/t"]
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert details(caught.value)["ErrorInfo"].reason == "ACCESS_REVOKED"


async def test_draining_lets_in_flight_calls_finish_and_ends_streams(experts: Any) -> None:
    servicer, stub, running = experts
    unary = asyncio.ensure_future(stub.GetExpert(pb.GetExpertRequest(name="experts/x"), timeout=10))
    await asyncio.wait_for(servicer.started.wait(), 5)
    servicer.started.clear()
    stream = stub.WatchTask(pb.WatchTaskRequest(name="workspaces/w/tasks/t"), timeout=10)
    await stream.read()
    await asyncio.wait_for(servicer.started.wait(), 5)

    drain = asyncio.create_task(running.drain())
    await asyncio.sleep(0.2)
    servicer.release.set()  # the unary call in flight finishes during the drain
    response = await unary
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await stream.read()
    await drain

    assert isinstance(response, pb.GetExpertResponse)
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
    assert details(ended.value)["ErrorInfo"].reason == "SERVER_SHUTTING_DOWN"


async def test_a_deadline_ends_the_call_with_deadline_exceeded(experts: Any) -> None:
    _, stub, _ = experts
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetExpert(pb.GetExpertRequest(name="experts/x"), timeout=0.2)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
