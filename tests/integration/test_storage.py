"""The SQL storage behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from cortex_core import errors
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.sql.migrate import alembic_config
from cortex_core.adapters.sql.tables import metadata
from cortex_core.domain.identity import Membership, Role, User, Workspace
from cortex_core.domain.paging import PageRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _user(n: int, email: str | None = None) -> User:
    return User(
        id=f"u{n}",
        email=email or f"user{n}@example.com",
        display_name=f"User {n}",
        password_hash="$argon2id$placeholder",
        create_time=T0,
        update_time=T0,
    )


def _workspace(n: int) -> Workspace:
    t = T0 + timedelta(seconds=n)
    return Workspace(id=f"w{n:03d}", display_name=f"Workspace {n}", create_time=t, update_time=t)


async def test_migrations_build_exactly_the_declared_schema(database: SqlDatabase) -> None:
    async with database.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )
    assert [d for d in diff if not _is_full_text_search(d)] == []


def _is_full_text_search(diff: object) -> bool:
    """Migration 0005's per-dialect search objects, which the metadata leaves out:
    SQLite's ``memories_fts`` (and its shadow tables), PostgreSQL's
    ``memories.search_vector`` column and its index."""
    if isinstance(diff, list):
        return all(_is_full_text_search(d) for d in diff)
    assert isinstance(diff, tuple)
    kind, *rest = diff
    if kind == "remove_table":
        return str(rest[0].name).startswith("memories_fts")
    if kind == "remove_column":
        return (rest[1], rest[2].name) == ("memories", "search_vector")
    if kind == "remove_index":
        return str(rest[0].name) == "ix_memories_search_vector"
    return False


async def test_migrating_twice_is_harmless(database: SqlDatabase) -> None:
    await database.migrate()
    async with database.engine.connect() as conn:
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar()
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_a_committed_user_is_found_by_email_in_any_case(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.users.add(_user(1, "Ada@Example.com"))
        await uow.commit()
    async with database.unit_of_work() as uow:
        found = await uow.users.get_by_email("ada@example.COM")
    assert found is not None
    assert found.id == "u1"
    assert found.email == "Ada@Example.com"
    assert found.create_time == T0
    assert found.create_time.tzinfo is not None


async def test_work_that_is_not_committed_is_rolled_back(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.users.add(_user(1))
    async with database.unit_of_work() as uow:
        assert await uow.users.get("u1") is None


async def test_an_error_inside_a_unit_of_work_keeps_nothing(database: SqlDatabase) -> None:
    with pytest.raises(RuntimeError):
        async with database.unit_of_work() as uow:
            await uow.users.add(_user(1))
            raise RuntimeError("boom")
    async with database.unit_of_work() as uow:
        assert await uow.users.get("u1") is None


async def test_a_taken_email_is_already_exists(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.users.add(_user(1, "same@example.com"))
        await uow.commit()
    with pytest.raises(errors.AlreadyExists):
        async with database.unit_of_work() as uow:
            await uow.users.add(_user(2, "SAME@example.com"))
            await uow.commit()


async def test_foreign_keys_are_enforced(database: SqlDatabase) -> None:
    with pytest.raises(errors.FailedPrecondition):
        async with database.unit_of_work() as uow:
            await uow.workspaces.add_member(Membership("missing", "missing", Role.OWNER, T0))
            await uow.commit()


async def test_workspaces_page_through_in_creation_order(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.users.add(_user(1))
        await uow.users.add(_user(2))
        for n in range(7):
            await uow.workspaces.add(_workspace(n))
            await uow.workspaces.add_member(Membership(f"w{n:03d}", "u1", Role.OWNER, T0))
        await uow.workspaces.add(_workspace(99))
        await uow.workspaces.add_member(Membership("w099", "u2", Role.OWNER, T0))
        await uow.commit()

    seen: list[str] = []
    token = ""
    async with database.unit_of_work() as uow:
        while True:
            page = await uow.workspaces.list_for_user("u1", PageRequest.parse(3, token))
            assert len(page.items) <= 3
            seen.extend(w.id for w in page.items)
            token = page.next_page_token
            if not token:
                break
    assert seen == [f"w{n:03d}" for n in range(7)]


async def test_a_forged_page_token_is_invalid_argument(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        with pytest.raises(errors.InvalidArgument):
            await uow.workspaces.list_for_user("u1", PageRequest.parse(3, "not-a-token"))


async def test_a_membership_carries_its_role(database: SqlDatabase) -> None:
    async with database.unit_of_work() as uow:
        await uow.users.add(_user(1))
        await uow.workspaces.add(_workspace(1))
        await uow.workspaces.add_member(Membership("w001", "u1", Role.VIEWER, T0))
        await uow.commit()
    async with database.unit_of_work() as uow:
        membership = await uow.workspaces.get_membership("w001", "u1")
        assert await uow.workspaces.get_membership("w001", "u2") is None
    assert membership is not None
    assert membership.role is Role.VIEWER
    assert not membership.role.can_write


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:1/cortex",
        "sqlite+aiosqlite:////proc/cortex-no-such-dir/cortex.db",
    ],
)
async def test_a_database_that_cannot_be_reached_is_unavailable(url: str) -> None:
    database = SqlDatabase.from_url(url)
    try:
        with pytest.raises(errors.Unavailable):
            await database.ping()
    finally:
        await database.dispose()


async def test_a_workspace_is_read_with_a_members_role_and_not_for_a_non_member(
    database: SqlDatabase,
) -> None:
    async with database.unit_of_work() as uow:
        await uow.users.add(_user(1))
        await uow.users.add(_user(2))
        await uow.workspaces.add(_workspace(1))
        await uow.workspaces.add_member(Membership("w001", "u1", Role.EDITOR, T0))
        await uow.commit()
    async with database.unit_of_work() as uow:
        found = await uow.workspaces.get_as_member("w001", "u1")
        assert found is not None
        workspace, membership = found
        assert workspace == await uow.workspaces.get("w001")
        assert membership == await uow.workspaces.get_membership("w001", "u1")
        assert membership.role is Role.EDITOR
        assert await uow.workspaces.get_as_member("w001", "u2") is None
        assert await uow.workspaces.get_as_member("w404", "u1") is None
