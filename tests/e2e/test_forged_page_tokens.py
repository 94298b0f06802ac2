"""No page token, however forged, makes a List RPC fail with anything but INVALID_ARGUMENT.

Property-based (Hypothesis), over the wire, against a real ``cortex-core serve``
on SQLite and on PostgreSQL. Every List RPC is first called for real with
``page_size=1`` to get a genuine ``next_page_token``; the forgeries are that
token with one part replaced (naive or out-of-range times, huge, negative or
non-ASCII digits, sequences beyond 2^64, NUL characters), and garbage (random
text, random bytes in base64, deeply nested JSON). The answer is always either a
page or INVALID_ARGUMENT with reason INVALID_PAGE_TOKEN and a field violation on
``page_token``; a forged time or number is never accepted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import grpc
import pytest
from cortex.auth.v1 import auth_service_pb2 as auth_pb
from cortex.auth.v1 import auth_service_pb2_grpc as auth_grpc
from cortex.context.v1 import conversation_pb2, memory_pb2
from cortex.context.v1 import conversation_service_pb2 as conversation_pb
from cortex.context.v1 import conversation_service_pb2_grpc as conversation_grpc
from cortex.context.v1 import memory_service_pb2 as memory_pb
from cortex.context.v1 import memory_service_pb2_grpc as memory_grpc
from cortex.sessions.v1 import session_service_pb2 as session_pb
from cortex.sessions.v1 import session_service_pb2_grpc as session_grpc
from cortex.sessions.v1 import workspace_pb2
from cortex.sessions.v1 import workspace_service_pb2 as workspace_pb
from cortex.sessions.v1 import workspace_service_pb2_grpc as workspace_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from support.clients import PASSWORD
from support.databases import postgres_database
from support.rpc import details
from support.servers import cortex_server

#: A List call: page size and token in, (items, next_page_token) out.
Lister = Callable[[int, str], tuple[int, str]]

_EXAMPLES = settings(max_examples=40, deadline=None)


@dataclasses.dataclass(repr=False)
class Listing:
    name: str
    call: Lister
    token: str  # a genuine next_page_token of this listing


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def listings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Listing]]:
    """A serving process with two of everything, and each List RPC with a real token."""
    with contextlib.ExitStack() as stack:
        env: dict[str, str] = {}
        if request.param == "postgresql":
            env["CORTEX_DATABASE_URL"] = stack.enter_context(_postgres_database())
        server = stack.enter_context(
            cortex_server(tmp_path_factory.mktemp("forged-tokens"), env=env)
        )
        channel = stack.enter_context(grpc.insecure_channel(server.address))
        yield _seed(channel)


@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for a module (its own loop: pytest's is per test)."""
    loop = asyncio.new_event_loop()
    manager = postgres_database()
    try:
        yield loop.run_until_complete(manager.__aenter__())
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


def _seed(channel: grpc.Channel) -> dict[str, Listing]:
    auth = auth_grpc.AuthServiceStub(channel)
    email = f"forger-{uuid.uuid4().hex[:8]}@example.com"
    registered = auth.Register(
        auth_pb.RegisterRequest(email=email, password=PASSWORD, display_name="F"), timeout=30
    )
    auth.Login(auth_pb.LoginRequest(email=email, password=PASSWORD), timeout=30)
    friend = f"friend-{uuid.uuid4().hex[:8]}@example.com"
    auth.Register(
        auth_pb.RegisterRequest(email=friend, password=PASSWORD, display_name="G"), timeout=30
    )
    meta = [("authorization", f"Bearer {registered.access_token}")]
    sessions = session_grpc.SessionServiceStub(channel)
    workspaces = workspace_grpc.WorkspaceServiceStub(channel)
    conversations = conversation_grpc.ConversationServiceStub(channel)
    memories = memory_grpc.MemoryServiceStub(channel)

    workspace = workspaces.CreateWorkspace(
        workspace_pb.CreateWorkspaceRequest(workspace=workspace_pb2.Workspace(display_name="W")),
        metadata=meta,
        timeout=10,
    ).workspace.name
    workspaces.AddWorkspaceMember(
        workspace_pb.AddWorkspaceMemberRequest(
            parent=workspace, email=friend, role=workspace_pb2.WORKSPACE_ROLE_VIEWER
        ),
        metadata=meta,
        timeout=10,
    )
    names = [
        conversations.CreateConversation(
            conversation_pb.CreateConversationRequest(
                parent=workspace, conversation=conversation_pb2.Conversation(title=f"c{i}")
            ),
            metadata=meta,
            timeout=10,
        ).conversation.name
        for i in range(2)
    ]
    for _ in conversations.SendMessage(
        conversation_pb.SendMessageRequest(conversation=names[0], content="hello there"),
        metadata=meta,
        timeout=30,
    ):
        pass
    for i in range(2):
        memories.CreateMemory(
            memory_pb.CreateMemoryRequest(
                parent=workspace,
                memory=memory_pb2.Memory(
                    content=f"the forger likes tea number {i}", kind=memory_pb2.MEMORY_KIND_FACT
                ),
            ),
            metadata=meta,
            timeout=10,
        )

    def lister(method: Any, build: Callable[[int, str], Any], field: str) -> Lister:
        def call(size: int, token: str) -> tuple[int, str]:
            response = method(build(size, token), metadata=meta, timeout=10)
            return len(getattr(response, field)), response.next_page_token

        return call

    calls: dict[str, Lister] = {
        "ListSessions": lister(
            sessions.ListSessions,
            lambda s, t: session_pb.ListSessionsRequest(
                parent=registered.user.name, page_size=s, page_token=t
            ),
            "sessions",
        ),
        "ListWorkspaces": lister(
            workspaces.ListWorkspaces,
            lambda s, t: workspace_pb.ListWorkspacesRequest(page_size=s, page_token=t),
            "workspaces",
        ),
        "ListWorkspaceMembers": lister(
            workspaces.ListWorkspaceMembers,
            lambda s, t: workspace_pb.ListWorkspaceMembersRequest(
                parent=workspace, page_size=s, page_token=t
            ),
            "members",
        ),
        "ListConversations": lister(
            conversations.ListConversations,
            lambda s, t: conversation_pb.ListConversationsRequest(
                parent=workspace, page_size=s, page_token=t
            ),
            "conversations",
        ),
        "ListMessages": lister(
            conversations.ListMessages,
            lambda s, t: conversation_pb.ListMessagesRequest(
                parent=names[0], page_size=s, page_token=t
            ),
            "messages",
        ),
        "ListMemories": lister(
            memories.ListMemories,
            lambda s, t: memory_pb.ListMemoriesRequest(parent=workspace, page_size=s, page_token=t),
            "memories",
        ),
        "SearchMemories": lister(
            memories.SearchMemories,
            lambda s, t: memory_pb.SearchMemoriesRequest(
                parent=workspace, query="forger tea", page_size=s, page_token=t
            ),
            "results",
        ),
    }
    found = {}
    for name, call in calls.items():
        count, token = call(1, "")
        assert count == 1
        assert token, f"{name} gave no next_page_token for a second item"
        found[name] = Listing(name, call, token)
    return found


LISTS = [
    "ListSessions",
    "ListWorkspaces",
    "ListWorkspaceMembers",
    "ListConversations",
    "ListMessages",
    "ListMemories",
    "SearchMemories",
]


def _decode(token: str) -> list[str]:
    parts = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert isinstance(parts, list)
    return parts


def _encode(parts: list[Any]) -> str:
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _is_time_or_number(part: str) -> bool:
    if part.isascii() and part.isdigit():
        return True
    try:
        datetime.fromisoformat(part)
    except ValueError:
        return False
    return True


_naive_times = st.datetimes().map(datetime.isoformat)
_edge_times = st.sampled_from(
    [
        "0001-01-01T00:00:00+05:00",  # before datetime.min in UTC
        "9999-12-31T23:59:59-05:00",  # after datetime.max in UTC
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59.999999",
        "2026-13-01T00:00:00+00:00",
    ]
)
_huge_digits = st.builds(
    str.__add__, st.sampled_from("123456789"), st.text("0123456789", min_size=19, max_size=6000)
)
_beyond_u64 = st.integers(min_value=2**64, max_value=2**70).map(str)
_negative = st.integers(max_value=-1).map(str)
_unicode_digits = st.text(
    alphabet=st.characters(categories=["Nd", "No"], exclude_characters="0123456789"),
    min_size=1,
    max_size=30,
)
_with_nul = st.text(max_size=20).map(lambda s: s + "\x00")
#: Values no time or number part of a token may hold.
FORGED_PARTS = st.one_of(
    _naive_times, _edge_times, _huge_digits, _beyond_u64, _negative, _unicode_digits, _with_nul
)

_nested = st.integers(min_value=1, max_value=100_000).map(lambda depth: "[" * depth + "]" * depth)
GARBAGE = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    _nested.map(lambda text: base64.urlsafe_b64encode(text.encode()).decode()),
    st.lists(st.one_of(st.integers(), st.floats(), st.none(), st.text()), max_size=6).map(_encode),
    # lone surrogates and control characters survive JSON but not a database driver
    st.lists(st.text(alphabet=st.characters(categories=["Cs", "Cc"]), min_size=1), min_size=2).map(
        _encode
    ),
)


def _expect_invalid_page_token(error: grpc.RpcError) -> None:
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    found = details(error)
    assert found["ErrorInfo"].reason == "INVALID_PAGE_TOKEN"
    assert [v.field for v in found["BadRequest"].field_violations] == ["page_token"]


@pytest.mark.parametrize("name", LISTS)
@_EXAMPLES
@given(data=st.data())
def test_a_genuine_token_with_a_forged_time_or_number_is_invalid_argument(
    listings: dict[str, Listing], name: str, data: st.DataObject
) -> None:
    listing = listings[name]
    parts = _decode(listing.token)
    targets = [i for i, part in enumerate(parts) if _is_time_or_number(part)]
    assert targets, f"{name}'s token holds no time or number: {parts}"
    index = data.draw(st.sampled_from(targets), label="part")
    parts[index] = data.draw(FORGED_PARTS, label="forged")
    with pytest.raises(grpc.RpcError) as caught:
        listing.call(1, _encode(parts))
    _expect_invalid_page_token(caught.value)


@pytest.mark.parametrize("name", LISTS)
@_EXAMPLES
@given(data=st.data())
def test_a_genuine_token_with_any_part_forged_is_a_page_or_invalid_argument(
    listings: dict[str, Listing], name: str, data: st.DataObject
) -> None:
    listing = listings[name]
    parts: list[Any] = _decode(listing.token)
    index = data.draw(st.integers(min_value=0, max_value=len(parts)), label="part")
    forged = data.draw(st.one_of(FORGED_PARTS, st.text(max_size=40)), label="forged")
    if index == len(parts):
        parts.append(forged)  # one part too many
    else:
        parts[index] = forged
    try:
        listing.call(1, _encode(parts))
    except grpc.RpcError as error:
        _expect_invalid_page_token(error)


@pytest.mark.parametrize("name", LISTS)
@_EXAMPLES
@given(token=GARBAGE)
def test_a_garbage_token_is_invalid_argument_on_page_token(
    listings: dict[str, Listing], name: str, token: str
) -> None:
    if not token:
        return  # the empty token is the first page
    try:
        listings[name].call(1, token)
    except grpc.RpcError as error:
        _expect_invalid_page_token(error)
    else:
        pytest.fail(f"{name} accepted the garbage page token {token!r}")
