"""Generated requests to every unary RPC of every service, over the wire.

A real server (SQLite and PostgreSQL) runs in a thread of its own; Hypothesis
builds request messages from each method's descriptor (text with NUL and any
Unicode, huge and negative numbers, unknown enum values, out-of-range durations
and times, resource names that point at real and random resources) and sends
them, now and then, as raw bytes that do not parse. Whatever it sends, the answer
is never ``INTERNAL`` or ``UNKNOWN``, and every error carries an ``ErrorInfo``
with domain ``cortex`` and a reason of the contract's table for its code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.clients import PASSWORD
from support.contract import contract_reasons
from support.inprocess import server_thread
from support.rpc import details
from support.task_client import ECHO, TasksClient

from cortex_core.api.registry import service_names
from cortex_core.server import RunningServer

EXAMPLES_PER_BACKEND = 300
#: What an error message must never show: class names and stack text.
_INTERNAL_NAMES = ("Traceback", "DecodeError", "ValueError", "TypeError", "KeyError", "Overflow")
_MAX_DEPTH = 3
_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def _unary_methods() -> list[tuple[str, Descriptor]]:
    pool = descriptor_pool.Default()
    return [
        (f"/{name}/{method.name}", method.input_type)
        for name in service_names()  # imports every generated service module
        for method in pool.FindServiceByName(name).methods
        if not method.client_streaming and not method.server_streaming
    ]


UNARY_METHODS = _unary_methods()


class Target:
    """The running server, a signed-in account and names of its real resources."""

    def __init__(self, address: str, email: str, token: str, names: list[str]) -> None:
        self.address = address
        self.email = email
        self.token = token
        self.names = names
        self.channel = grpc.insecure_channel(address)

    def call(self, method: str, payload: bytes) -> grpc.RpcError | None:
        stub = self.channel.unary_unary(method)  # bytes in, bytes out
        metadata = (("authorization", f"Bearer {self.token}"),)
        try:
            stub(payload, metadata=metadata, timeout=30)
        except grpc.RpcError as error:
            return error
        return None

    def sign_in_again(self) -> None:
        """After a generated Logout or RevokeSession ended the session."""
        from cortex.auth.v1 import auth_service_pb2 as auth

        stub = self.channel.unary_unary(
            "/cortex.auth.v1.AuthService/Login",
            request_serializer=auth.LoginRequest.SerializeToString,
            response_deserializer=auth.LoginResponse.FromString,
        )
        self.token = stub(auth.LoginRequest(email=self.email, password=PASSWORD)).access_token


async def _prepare(address: str) -> tuple[str, str, list[str]]:
    client = TasksClient(address)
    try:
        account = await client.register()
        workspace = await client.first_workspace(account)
        task = await client.create(account, workspace.name, "fuzz me")
    finally:
        await client.close()
    tools = ["tools/cortex.current_time", "tools/cortex.search_memories", "tools/cortex.remember"]
    names = [workspace.name, account.user, account.session, "users/-", task.name, ECHO, *tools]
    return account.email, account.access_token, names


@contextlib.contextmanager
def _server_thread(kind: str, tmp_path: Path) -> Iterator[Target]:
    """Run a server on its own event loop in a thread; yield a target for sync calls."""

    async def prepare(running: RunningServer) -> tuple[str, str, list[str]]:
        return await _prepare(running.address)

    with server_thread(kind, tmp_path, prepare) as (address, (email, token, names)):
        target = Target(address, email, token, names)
        try:
            yield target
        finally:
            target.channel.close()


# --- strategies -------------------------------------------------------------------

_HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40).map(lambda s: s + "\x00"),
    st.sampled_from(["", " ", "\x00", "-", "users/-", "a" * 5000, "ü" * 300, "😀"]),
)


def _names(target: Target) -> st.SearchStrategy[str]:
    real = st.sampled_from(target.names)
    child = st.tuples(
        real, st.sampled_from(["conversations", "memories", "members", "messages", "tasks"])
    )
    return st.one_of(
        real,
        st.builds(lambda pair, tail: f"{pair[0]}/{pair[1]}/{tail}", child, _HOSTILE_TEXT),
        st.builds(lambda head: f"workspaces/{head}", _HOSTILE_TEXT),
    )


def _scalar(field: FieldDescriptor, names: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if field.name in (
            "name",
            "parent",
            "conversation",
            "workspace",
            "expert",
        ) or field.name.endswith(("_name", "member", "user", "session")):
            return st.one_of(names, _HOSTILE_TEXT)
        return _HOSTILE_TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    low, high = _INT_BOUNDS[kind]
    return st.one_of(st.integers(low, high), st.sampled_from([0, 1, -1, low, high]))


def _message(
    descriptor: Descriptor, names: st.SearchStrategy[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(descriptor)
    if depth >= _MAX_DEPTH or descriptor.full_name in (
        "google.protobuf.Struct",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.Any",
    ):
        return st.just(cls())
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
                if value.type == FieldDescriptor.TYPE_MESSAGE:
                    continue
                item = st.dictionaries(_scalar(key, names), _scalar(value, names), max_size=3)
            elif field.is_repeated:
                item = st.lists(_message(entry, names, depth + 1), max_size=2)
            else:
                item = _message(entry, names, depth + 1)
        elif field.is_repeated:
            item = st.lists(_scalar(field, names), max_size=3)
        else:
            item = _scalar(field, names)
        parts[field.name] = st.one_of(st.none(), item)

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, value in values.items():
            if value is None:
                continue
            field = descriptor.fields_by_name[name]
            target = getattr(message, name)
            if (
                field.type == FieldDescriptor.TYPE_MESSAGE
                and field.message_type.GetOptions().map_entry
            ):
                target.update(value)
            elif field.is_repeated and field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            elif field.is_repeated:
                target.extend(value)
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target.CopyFrom(value)
            else:
                setattr(message, name, value)
        return message

    return st.fixed_dictionaries(parts).map(build)


@st.composite
def _requests(draw: st.DrawFn, target: Target) -> tuple[str, bytes]:
    method, descriptor = draw(st.sampled_from(UNARY_METHODS))
    if draw(st.integers(0, 19)) == 0:
        return method, draw(st.binary(min_size=1, max_size=64))
    message = draw(_message(descriptor, _names(target)))
    return method, message.SerializeToString()


# --- the property -----------------------------------------------------------------


def _check_answer(method: str, error: grpc.RpcError | None) -> None:
    if error is None:
        return
    code = error.code()
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        method,
        code,
        error.details(),
    )
    info = details(error).get("ErrorInfo")
    assert info is not None, (method, code, error.details())
    assert info.domain == "cortex"
    assert info.reason in contract_reasons()[code.name], (method, code, info.reason)
    assert not any(name in error.details() for name in _INTERNAL_NAMES), error.details()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    with _server_thread(request.param, tmp_path_factory.mktemp(f"fuzz-{request.param}")) as found:
        yield found


def test_no_generated_request_gets_internal_and_every_error_is_in_the_contract(
    target: Target,
) -> None:
    assert len(UNARY_METHODS) > 30

    @settings(
        max_examples=EXAMPLES_PER_BACKEND,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_requests(target))
    def send(request: tuple[str, bytes]) -> None:
        method, payload = request
        error = target.call(method, payload)
        _check_answer(method, error)
        if error is not None and error.code() is grpc.StatusCode.UNAUTHENTICATED:
            info = details(error).get("ErrorInfo")
            if info is not None and info.reason == "SESSION_REVOKED":
                target.sign_in_again()

    send()
