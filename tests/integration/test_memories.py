"""Memories: stored per workspace, found by full-text search, gone when they expire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
import sqlalchemy as sa
from cortex.context.v1 import memory_pb2 as mpb
from cortex.context.v1 import memory_service_pb2 as pb
from cortex.context.v1.memory_service_pb2_grpc import MemoryServiceStub
from google.protobuf import duration_pb2
from support.clients import Account, Client, workspace_pb
from support.inprocess import running_app
from support.rpc import details

from cortex_core.adapters.cache import InMemoryCache
from cortex_core.adapters.clock import ManualClock
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.domain.cache_keys import context_window_key
from cortex_core.domain.identity import Caller, Membership, Role, User, Workspace
from cortex_core.domain.memories import Memory, MemoryKind, ScoredMemory, SearchQuery
from cortex_core.services import reactions
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.memories import Memories

FACT, PREFERENCE, NOTE = mpb.MEMORY_KIND_FACT, mpb.MEMORY_KIND_PREFERENCE, mpb.MEMORY_KIND_NOTE
EDITOR, VIEWER = 2, 3
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Tenant:
    """A client plus the memory stub, and helpers for one user's workspace."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.memories = MemoryServiceStub(client.channel)

    async def owner(self) -> tuple[Account, str]:
        account = await self.client.register()
        return account, (await self.client.first_workspace(account)).name

    async def create(
        self, account: Account, parent: str, content: str, kind: int = FACT, **fields: Any
    ) -> mpb.Memory:
        request = pb.CreateMemoryRequest(
            parent=parent, memory=mpb.Memory(content=content, kind=kind, **fields)
        )
        response = await self.memories.CreateMemory(request, metadata=account.metadata())
        return response.memory

    async def search(self, account: Account, parent: str, query: str, **fields: Any) -> Any:
        return await self.memories.SearchMemories(
            pb.SearchMemoriesRequest(parent=parent, query=query, **fields),
            metadata=account.metadata(),
        )

    async def join(self, owner: Account, workspace: str, role: int) -> Account:
        member = await self.client.register()
        await self.client.workspaces.AddWorkspaceMember(
            workspace_pb.AddWorkspaceMemberRequest(parent=workspace, email=member.email, role=role),
            metadata=owner.metadata(),
        )
        return member


@pytest.fixture
async def tenant(db_url: str, tmp_path: Path) -> AsyncIterator[Tenant]:
    async with running_app(tmp_path, database_url=db_url) as running:
        client = Client(running.address)
        try:
            yield Tenant(client)
        finally:
            await client.close()


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(details(error)["ErrorInfo"].reason)


def _fields(error: grpc.aio.AioRpcError) -> list[str]:
    return [v.field for v in details(error)["BadRequest"].field_violations]


async def test_a_memory_is_created_read_listed_and_deleted(tenant: Tenant) -> None:
    alice, workspace = await tenant.owner()
    created = await tenant.create(
        alice, workspace, "The API is versioned v1", ttl=duration_pb2.Duration(seconds=3600)
    )
    assert created.name.startswith(f"{workspace}/memories/")
    assert created.kind == FACT
    assert created.creator == alice.user
    assert not created.stale
    assert created.expire_time.ToDatetime() - created.create_time.ToDatetime() == timedelta(hours=1)
    assert not created.HasField("ttl")

    got = await tenant.memories.GetMemory(
        pb.GetMemoryRequest(name=created.name), metadata=alice.metadata()
    )
    assert got.memory == created
    listed = await tenant.memories.ListMemories(
        pb.ListMemoriesRequest(parent=workspace), metadata=alice.metadata()
    )
    assert [m.name for m in listed.memories] == [created.name]

    await tenant.memories.DeleteMemory(
        pb.DeleteMemoryRequest(name=created.name), metadata=alice.metadata()
    )
    gone = await _error(
        tenant.memories.GetMemory(pb.GetMemoryRequest(name=created.name), metadata=alice.metadata())
    )
    assert gone.code() is grpc.StatusCode.NOT_FOUND
    assert _reason(gone) == "MEMORY_NOT_FOUND"
    again = await _error(
        tenant.memories.DeleteMemory(
            pb.DeleteMemoryRequest(name=created.name), metadata=alice.metadata()
        )
    )
    assert again.code() is grpc.StatusCode.NOT_FOUND


async def test_invalid_fields_are_reported_on_their_paths(tenant: Tenant) -> None:
    alice, workspace = await tenant.owner()
    bad = await _error(
        tenant.create(alice, workspace, " ", kind=0, ttl=duration_pb2.Duration(seconds=-5))
    )
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _fields(bad) == ["memory.content", "memory.kind", "memory.ttl"]

    elsewhere = await _error(
        tenant.create(
            alice,
            workspace,
            "from another workspace",
            source_messages=["workspaces/other/conversations/c/messages/m", "nonsense"],
        )
    )
    assert _fields(elsewhere) == ["memory.source_messages[0]", "memory.source_messages[1]"]

    missing = await _error(
        tenant.create(
            alice,
            workspace,
            "from a message that does not exist",
            source_messages=[f"{workspace}/conversations/c1/messages/m1"],
        )
    )
    assert missing.code() is grpc.StatusCode.NOT_FOUND
    assert _reason(missing) == "MESSAGE_NOT_FOUND"

    bad_name = await _error(
        tenant.memories.GetMemory(pb.GetMemoryRequest(name="memories/1"), metadata=alice.metadata())
    )
    assert bad_name.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_memories_are_listed_newest_first_by_kind_and_in_pages(tenant: Tenant) -> None:
    alice, workspace = await tenant.owner()
    names = []
    for n, kind in enumerate([FACT, PREFERENCE, FACT, NOTE, FACT]):
        names.append((await tenant.create(alice, workspace, f"memory {n}", kind=kind)).name)
    facts = [names[4], names[2], names[0]]

    seen: list[str] = []
    token = ""
    while True:
        page = await tenant.memories.ListMemories(
            pb.ListMemoriesRequest(parent=workspace, kind=FACT, page_size=2, page_token=token),
            metadata=alice.metadata(),
        )
        assert len(page.memories) <= 2
        assert all(m.kind == FACT for m in page.memories)
        seen.extend(m.name for m in page.memories)
        if not (token := page.next_page_token):
            break
        other_kind = await _error(
            tenant.memories.ListMemories(
                pb.ListMemoriesRequest(parent=workspace, kind=NOTE, page_token=token),
                metadata=alice.metadata(),
            )
        )
        assert _reason(other_kind) == "INVALID_PAGE_TOKEN"
    # Same create_time under a fast clock is ordered by id, so compare as sets
    # plus the count; newest-first is checked on distinct times below.
    assert sorted(seen) == sorted(facts)
    everything = await tenant.memories.ListMemories(
        pb.ListMemoriesRequest(parent=workspace), metadata=alice.metadata()
    )
    assert len(everything.memories) == 5
    times = [m.create_time.ToDatetime() for m in everything.memories]
    assert times == sorted(times, reverse=True)


async def test_search_ranks_stronger_matches_first_and_leaves_out_the_rest(
    tenant: Tenant,
) -> None:
    alice, workspace = await tenant.owner()
    weak = await tenant.create(alice, workspace, "The office has a coffee machine")
    strong = await tenant.create(
        alice, workspace, "Ada drinks coffee black; coffee before every standup, espresso coffee"
    )
    await tenant.create(alice, workspace, "The deploy runs on Fridays")
    bob, other_workspace = await tenant.owner()
    await tenant.create(bob, other_workspace, "coffee coffee coffee espresso")

    found = await tenant.search(alice, workspace, "What coffee does Ada like? espresso")
    assert [r.memory.name for r in found.results] == [strong.name, weak.name]
    assert 1 >= found.results[0].score > found.results[1].score > 0

    first = await tenant.search(alice, workspace, "coffee", page_size=1)
    assert len(first.results) == 1
    assert first.next_page_token
    second = await tenant.search(
        alice, workspace, "coffee", page_size=1, page_token=first.next_page_token
    )
    assert {first.results[0].memory.name, second.results[0].memory.name} == {
        strong.name,
        weak.name,
    }
    assert second.next_page_token == ""
    forged = await _error(
        tenant.search(alice, workspace, "tea", page_size=1, page_token=first.next_page_token)
    )
    assert _reason(forged) == "INVALID_PAGE_TOKEN"

    for query in ("", "   ", "x" * 2001, "?!"):
        empty = await _error(tenant.search(alice, workspace, query))
        assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert _fields(empty) == ["query"]
    nothing = await tenant.search(alice, workspace, "the of and")
    assert list(nothing.results) == []


async def test_an_expired_memory_is_never_returned_and_the_sweeper_deletes_it(
    db_url: str, tmp_path: Path
) -> None:
    clock = ManualClock()
    async with running_app(
        tmp_path, clock=clock, database_url=db_url, memory_sweep_interval=3600.0
    ) as running:
        client = Client(running.address)
        tenant = Tenant(client)
        try:
            alice, workspace = await tenant.owner()
            short = await tenant.create(
                alice,
                workspace,
                "temporary parking code 4711",
                ttl=duration_pb2.Duration(seconds=1),
            )
            kept = await tenant.create(alice, workspace, "permanent parking rules")
            clock.advance(2)

            gone = await _error(
                tenant.memories.GetMemory(
                    pb.GetMemoryRequest(name=short.name), metadata=alice.metadata()
                )
            )
            assert _reason(gone) == "MEMORY_NOT_FOUND"
            listed = await tenant.memories.ListMemories(
                pb.ListMemoriesRequest(parent=workspace), metadata=alice.metadata()
            )
            assert [m.name for m in listed.memories] == [kept.name]
            found = await tenant.search(alice, workspace, "parking")
            assert [r.memory.name for r in found.results] == [kept.name]
        finally:
            await client.close()

    # The row is still there until the sweeper runs; then it is not.
    database = SqlDatabase.from_url(db_url)
    try:
        assert await _memory_rows(database) == 2
        async with running_app(
            tmp_path, clock=clock, database_url=db_url, memory_sweep_interval=0.05
        ):
            for _ in range(100):
                if await _memory_rows(database) == 1:
                    break
                await asyncio.sleep(0.05)
        assert await _memory_rows(database) == 1
    finally:
        await database.dispose()


async def _memory_rows(database: SqlDatabase) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM memories"))).scalar_one())


async def test_viewers_read_and_search_but_cannot_create_or_delete(tenant: Tenant) -> None:
    owner, workspace = await tenant.owner()
    memory = await tenant.create(owner, workspace, "Quarterly goals are in the wiki")
    viewer = await tenant.join(owner, workspace, VIEWER)
    editor = await tenant.join(owner, workspace, EDITOR)

    denied = await _error(tenant.create(viewer, workspace, "viewer was here"))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    assert _reason(denied) == "EDITOR_REQUIRED"
    not_deleted = await _error(
        tenant.memories.DeleteMemory(
            pb.DeleteMemoryRequest(name=memory.name), metadata=viewer.metadata()
        )
    )
    assert _reason(not_deleted) == "EDITOR_REQUIRED"
    found = await tenant.search(viewer, workspace, "wiki goals")
    assert [r.memory.name for r in found.results] == [memory.name]

    await tenant.create(editor, workspace, "editor was here")
    await tenant.memories.DeleteMemory(
        pb.DeleteMemoryRequest(name=memory.name), metadata=editor.metadata()
    )


async def test_outsiders_get_not_found_for_every_memory_rpc(tenant: Tenant) -> None:
    alice, workspace = await tenant.owner()
    memory = await tenant.create(alice, workspace, "alice's secret plan")
    mallory, _ = await tenant.owner()
    m = tenant.memories
    calls = [
        tenant.create(mallory, workspace, "planted"),
        m.GetMemory(pb.GetMemoryRequest(name=memory.name), metadata=mallory.metadata()),
        m.ListMemories(pb.ListMemoriesRequest(parent=workspace), metadata=mallory.metadata()),
        m.DeleteMemory(pb.DeleteMemoryRequest(name=memory.name), metadata=mallory.metadata()),
        tenant.search(mallory, workspace, "secret plan"),
        tenant.search(mallory, workspace, ""),
    ]
    for call in calls:
        error = await _error(call)
        assert error.code() is grpc.StatusCode.NOT_FOUND
    still = await m.GetMemory(pb.GetMemoryRequest(name=memory.name), metadata=alice.metadata())
    assert still.memory.content == "alice's secret plan"


# --- provenance and cache invalidation, through the service and repository ---------


async def _seed(database: SqlDatabase) -> Caller:
    user = User("u1", "ada@example.com", "Ada", "$argon2id$x", T0, T0)
    async with database.unit_of_work() as uow:
        await uow.users.add(user)
        await uow.workspaces.add(
            Workspace(id="w1", display_name="W", create_time=T0, update_time=T0)
        )
        await uow.workspaces.add_member(Membership("w1", "u1", Role.OWNER, T0))
        await uow.commit()
    return Caller(user=user, session_id="s1", token_expire_time=T0 + timedelta(hours=1))


async def test_memories_of_a_deleted_conversation_turn_stale_and_leave_context(
    database: SqlDatabase,
) -> None:
    await _seed(database)
    source = "workspaces/w1/conversations/c1/messages/m1"
    derived = Memory(
        "m-derived",
        "w1",
        "Ada prefers tea",
        MemoryKind.PREFERENCE,
        "u1",
        T0,
        source_messages=(source,),
    )
    other = Memory("m-other", "w1", "Bob prefers tea too", MemoryKind.PREFERENCE, "u1", T0)
    async with database.unit_of_work() as uow:
        await uow.memories.add(derived)
        await uow.memories.add(other)
        await uow.commit()
    memories = Memories(uow=database.unit_of_work, clock=ManualClock(), events=EventBus())

    async def for_context(query: str) -> list[ScoredMemory]:
        async with database.unit_of_work() as uow:
            return await memories.for_context(uow, "w1", query, 10)

    assert {h.memory.id for h in await for_context("tea")} == {
        "m-derived",
        "m-other",
    }

    async with database.unit_of_work() as uow:
        flagged = await uow.memories.mark_stale_derived_from_conversation(
            "workspaces/w1/conversations/c1"
        )
        await uow.commit()
    assert [m.id for m in flagged] == ["m-derived"]
    assert [h.memory.id for h in await for_context("tea")] == ["m-other"]
    async with database.unit_of_work() as uow:
        kept = await uow.memories.get("w1", "m-derived", T0)
        hits = await uow.memories.search(
            "w1", SearchQuery.parse("tea"), None, offset=0, limit=10, now=T0
        )
        removed = await uow.memories.delete_derived_from_conversation(
            "workspaces/w1/conversations/c1"
        )
        await uow.commit()
    assert kept is not None
    assert kept.stale
    assert kept.source_messages == (source,)
    assert {h.memory.id: h.memory.stale for h in hits} == {"m-derived": True, "m-other": False}
    assert [m.id for m in removed] == ["m-derived"]


async def test_deleting_a_memory_drops_the_workspaces_cached_context_windows(
    database: SqlDatabase,
) -> None:
    caller = await _seed(database)
    cache = InMemoryCache()
    bus = EventBus()
    reactions.register(bus, cache=cache, revocations=[])
    memories = Memories(uow=database.unit_of_work, clock=ManualClock(), events=bus)
    memory = await memories.create(
        caller, "w1", content="Ada is on leave", kind=MemoryKind.FACT, ttl=None, source_messages=()
    )
    key, elsewhere = context_window_key("w1", "c1", "8192"), context_window_key("w2", "c9")
    await cache.set(key, b"window", 60)
    await cache.set(elsewhere, b"window", 60)
    await memories.delete(caller, "w1", memory.id)
    assert await cache.get(key) is None
    assert await cache.get(elsewhere) == b"window"
