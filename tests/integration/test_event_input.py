"""Hostile SubscribeEvents input over a real server: forged resume tokens and filters.

Whatever a client sends, the answer is a stream or INVALID_ARGUMENT (with a field
violation naming the field) or NOT_FOUND for a workspace that is not the caller's;
never INTERNAL or UNKNOWN, and a forged token never makes the event log look down.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cortex.events.v1 import event_service_pb2, event_service_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.clients import Account, Client
from support.databases import require_env
from support.inprocess import running_app
from support.rpc import details

EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Caller:
    """One account on a running server, and how it subscribes."""

    def __init__(self, client: Client, account: Account, workspace: str) -> None:
        self.client = client
        self.account = account
        self.workspace = workspace
        self.stub = event_service_pb2_grpc.EventServiceStub(client.channel)

    @property
    def own_streams(self) -> list[str]:
        workspace_id = self.workspace.removeprefix("workspaces/")
        user_id = self.account.user.removeprefix("users/")
        return [f"ws:{workspace_id}", f"user:{user_id}"]

    async def outcome(self, **request: Any) -> grpc.StatusCode:
        """OK once the stream's first frame arrives, else the status it ended with."""
        error = await self._error(**request)
        if error is None:
            return grpc.StatusCode.OK
        code = error.code()
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
            code,
            error.details(),
        )
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            violations = details(error)["BadRequest"].field_violations
            # Edge checks (NUL characters) report every offending field at once, and
            # name a repeated field's entry by index (``workspaces[0]``).
            fields = {v.field.partition("[")[0] for v in violations}
            assert fields, error.details()
            assert fields <= {"resume_token", "workspaces", "conversation"}, fields
        return code

    async def _error(self, **request: Any) -> grpc.aio.AioRpcError | None:
        call = self.stub.SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(**request), metadata=self.account.metadata()
        )
        try:
            async with asyncio.timeout(10):
                frame = await call.read()
        except grpc.aio.AioRpcError as error:
            return error
        finally:
            call.cancel()
        assert frame is not grpc.aio.EOF
        return None


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[Caller]:
    async with running_app(tmp_path, events_heartbeat=0.2) as running:
        client = Client(running.address)
        try:
            account = await client.register()
            workspace = (await client.first_workspace(account)).name
            yield Caller(client, account, workspace)
        finally:
            await client.close()


# ASCII, Arabic-Indic and fullwidth digits: int() takes them all, JSON only the first.
DIGITS = "".join(chr(c) for c in (*range(0x30, 0x3A), *range(0x660, 0x66A), *range(0xFF10, 0xFF1A)))


def _token(body: bytes) -> str:
    return "v1." + base64.urlsafe_b64encode(body).decode().rstrip("=")


_sequences = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.floats(allow_nan=False),
    st.text(alphabet=DIGITS, min_size=1, max_size=30),
    st.booleans(),
    st.none(),
)


@st.composite
def forged_tokens(draw: st.DrawFn, streams: list[str]) -> str:
    """Tokens a client could make: near-valid JSON, deep nesting, garbage."""
    kinds = ["positions", "nested", "huge digits", "raw digits", "text", "bytes"]
    kind = draw(st.sampled_from(kinds))
    if kind == "positions":
        keys = st.one_of(st.sampled_from(streams), st.text(max_size=20))
        positions = draw(st.dictionaries(keys, _sequences, max_size=4))
        return _token(json.dumps(positions, ensure_ascii=draw(st.booleans())).encode())
    if kind == "nested":
        depth = draw(st.integers(min_value=1, max_value=40_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        return _token((opener * depth).encode())
    if kind == "huge digits":
        count = draw(st.integers(min_value=20, max_value=20_000))
        return _token(b'{"%s":%s}' % (streams[0].encode(), b"9" * count))
    if kind == "raw digits":
        number = draw(st.text(alphabet=DIGITS, min_size=1, max_size=40))
        return _token(b'{"%s":%s}' % (streams[0].encode(), number.encode()))
    if kind == "text":
        return draw(st.one_of(st.text(max_size=80), st.text(max_size=80).map("v1.".__add__)))
    return _token(draw(st.binary(max_size=200)))


async def test_a_forged_resume_token_is_refused_or_opens_never_internal(caller: Caller) -> None:
    @EXAMPLES
    @given(token=forged_tokens(caller.own_streams))
    async def check(token: str) -> None:
        await caller.outcome(resume_token=token)

    await _run(check)


async def test_any_filter_is_refused_or_opens_never_internal(caller: Caller) -> None:
    names = st.one_of(
        st.just(caller.workspace),
        st.text(max_size=60),
        st.text(max_size=30).map("workspaces/".__add__),
    )

    @EXAMPLES
    @given(
        workspaces=st.lists(names, max_size=3),
        conversation=st.one_of(
            st.just(""),
            st.text(max_size=60),
            st.text(max_size=26).map(f"{caller.workspace}/conversations/".__add__),
        ),
        event_types=st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=4),
    )
    async def check(workspaces: list[str], conversation: str, event_types: list[int]) -> None:
        await caller.outcome(
            workspaces=workspaces, conversation=conversation, event_types=event_types
        )

    await _run(check)


async def _run(check: Any) -> None:
    """Run a Hypothesis test of async examples on this loop (each example is awaited)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, _examples_in_loop, check, loop)


def _examples_in_loop(check: Any, loop: asyncio.AbstractEventLoop) -> None:
    inner = check.hypothesis.inner_test

    def run_one(*args: Any, **kwargs: Any) -> None:
        asyncio.run_coroutine_threadsafe(inner(*args, **kwargs), loop).result(timeout=60)

    check.hypothesis.inner_test = run_one
    check()


async def test_a_sequence_beyond_int64_is_invalid_argument_and_the_redis_log_stays_up(
    tmp_path: Path,
) -> None:
    redis_url = require_env("CORTEX_TEST_REDIS_URL")
    async with running_app(tmp_path, events_heartbeat=0.2, redis_url=redis_url) as running:
        client = Client(running.address)
        try:
            account = await client.register()
            caller = Caller(client, account, (await client.first_workspace(account)).name)
            for sequence in (2**63, 2**64 + 5, 10**30):
                forged = _token(json.dumps({caller.own_streams[0]: sequence}).encode())
                assert await caller.outcome(resume_token=forged) is grpc.StatusCode.INVALID_ARGUMENT
                # The log is not in its outage backoff: a real subscription opens at once.
                assert await caller.outcome() is grpc.StatusCode.OK
        finally:
            await client.close()
