"""The database under pressure: a drained pool, a held write lock, text it cannot store.

Pressure is a retryable UNAVAILABLE (reason DATABASE_BUSY, with RetryInfo), never
INTERNAL; reads keep being answered while SQLite writes queue for its one writer;
and the health probe does not mistake a busy pool for an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cortex.context.v1 import conversation_pb2
from cortex.context.v1 import conversation_service_pb2 as cpb
from cortex.context.v1 import conversation_service_pb2_grpc as cgrpc
from support.clients import Client, authenticated_channel
from support.databases import postgres_database
from support.inprocess import running_app
from support.rpc import details

from cortex_core import errors
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.domain.identity import User
from cortex_core.ports import Database, UnitOfWork


@contextlib.asynccontextmanager
async def drained_pool(database: Database) -> AsyncIterator[errors.Unavailable]:
    """Take every pooled connection (each open unit of work runs one read) until
    the next one is refused; yield that refusal, then give them all back."""
    held: list[UnitOfWork] = []
    try:
        while True:
            uow = database.unit_of_work()
            await uow.__aenter__()
            try:
                await uow.outbox.pending(1)
            except errors.Unavailable as refused:
                await uow.__aexit__(None, None, None)
                yield refused
                return
            held.append(uow)
    finally:
        for uow in held:
            await uow.__aexit__(None, None, None)


async def test_a_drained_pool_is_unavailable_with_retry_info_and_health_stays_up(
    db_url: str, tmp_path: Path
) -> None:
    async with running_app(tmp_path, database_url=db_url, database_wait=0.5) as running:
        client = Client(running.address)
        try:
            account = await client.register()
            async with drained_pool(running.app.database) as refused:
                assert refused.reason == "DATABASE_BUSY"
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await client.me(account)
                # The probe has a connection of its own: pressure is not an outage.
                await running.app.database.ping()
            assert (await client.me(account)).user.name == account.user
        finally:
            await client.close()
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    info = details(caught.value)
    assert info["ErrorInfo"].reason == "DATABASE_BUSY"
    assert info["RetryInfo"].retry_delay.ToTimedelta().total_seconds() > 0


async def test_reads_are_answered_while_writes_queue_for_the_sqlite_write_lock(
    tmp_path: Path,
) -> None:
    async with running_app(tmp_path) as running:
        client = Client(running.address)
        account = await client.register()
        workspace = (await client.first_workspace(account)).name
        channel = authenticated_channel(running.address, account.access_token)
        stub = cgrpc.ConversationServiceStub(channel)
        # Another process's write transaction holds the file's write lock.
        other = sqlite3.connect(tmp_path / "cortex.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        writes = [
            asyncio.ensure_future(
                stub.CreateConversation(
                    cpb.CreateConversationRequest(
                        parent=workspace, conversation=conversation_pb2.Conversation(title=f"{n}")
                    ),
                    timeout=60,
                )
            )
            for n in range(40)
        ]
        try:
            await asyncio.sleep(0.5)  # let the writes reach the database and wait there
            assert not any(write.done() for write in writes)
            for _ in range(3):  # each read would need a pooled connection
                listed = await stub.ListConversations(
                    cpb.ListConversationsRequest(parent=workspace), timeout=10
                )
                assert list(listed.conversations) == []
        finally:
            other.rollback()
            other.close()
            created = await asyncio.gather(*writes, return_exceptions=True)
            await channel.close()
            await client.close()
    assert [type(c).__name__ for c in created] == ["CreateConversationResponse"] * 40


async def test_text_postgresql_cannot_store_is_invalid_argument(tmp_path: Path) -> None:
    async with postgres_database() as url:
        async with running_app(tmp_path, database_url=url) as running:
            client = Client(running.address)
            account = await client.register()
            workspace = (await client.first_workspace(account)).name
            channel = authenticated_channel(running.address, account.access_token)
            stub = cgrpc.ConversationServiceStub(channel)
            try:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.CreateConversation(
                        cpb.CreateConversationRequest(
                            parent=workspace,
                            conversation=conversation_pb2.Conversation(title="nul \x00 here"),
                        ),
                        timeout=10,
                    )
            finally:
                await channel.close()
                await client.close()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_the_storage_backstop_refuses_nul_as_invalid_argument() -> None:
    """Whatever the edge lets through, the driver-error table never lets a NUL
    become INTERNAL (PostgreSQL text cannot hold one)."""
    async with postgres_database() as url:
        database = SqlDatabase.from_url(url)
        try:
            await database.migrate()
            now = datetime.now(UTC)
            user = User(
                id="u1",
                email="nul@example.com",
                display_name="A \x00 B",
                password_hash="x",
                create_time=now,
                update_time=now,
            )
            with pytest.raises(errors.InvalidArgument) as caught:
                async with database.unit_of_work() as uow:
                    await uow.users.add(user)
                    await uow.commit()
            with pytest.raises(errors.InvalidArgument):
                async with database.unit_of_work() as uow:
                    await uow.users.get_by_email("nul\x00@example.com")
        finally:
            await database.dispose()
    assert caught.value.reason == "UNSUPPORTED_VALUE"
