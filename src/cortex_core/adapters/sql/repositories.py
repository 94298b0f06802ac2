"""SQL implementations of the repository ports, bound to one connection."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cortex_core.adapters.sql import tables
from cortex_core.domain.identity import Membership, Role, Session, User, Workspace
from cortex_core.domain.paging import Page, PageRequest, encode_token
from cortex_core.errors import InvalidArgument


class SqlUserRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, user: User) -> None:
        await self._conn.execute(
            tables.users.insert().values(
                id=user.id,
                email=user.email,
                email_normalized=user.email.casefold(),
                display_name=user.display_name,
                password_hash=user.password_hash,
                create_time=user.create_time,
                update_time=user.update_time,
            )
        )

    async def get(self, user_id: str) -> User | None:
        row = (
            await self._conn.execute(sa.select(tables.users).where(tables.users.c.id == user_id))
        ).first()
        return _user(row) if row else None

    async def get_by_email(self, email: str) -> User | None:
        query = sa.select(tables.users).where(tables.users.c.email_normalized == email.casefold())
        row = (await self._conn.execute(query)).first()
        return _user(row) if row else None


class SqlWorkspaceRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, workspace: Workspace) -> None:
        await self._conn.execute(
            tables.workspaces.insert().values(
                id=workspace.id,
                display_name=workspace.display_name,
                create_time=workspace.create_time,
                update_time=workspace.update_time,
            )
        )

    async def get(self, workspace_id: str) -> Workspace | None:
        query = sa.select(tables.workspaces).where(tables.workspaces.c.id == workspace_id)
        row = (await self._conn.execute(query)).first()
        return _workspace(row) if row else None

    async def list_for_user(self, user_id: str, page: PageRequest) -> Page[Workspace]:
        w, m = tables.workspaces, tables.workspace_members
        query = (
            sa.select(w)
            .join(m, m.c.workspace_id == w.c.id)
            .where(m.c.user_id == user_id)
            .order_by(w.c.create_time, w.c.id)
            .limit(page.size + 1)
        )
        if page.after is not None:
            if len(page.after) != 2:
                raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN")
            after_time, after_id = page.after
            query = query.where(
                sa.tuple_(w.c.create_time, w.c.id)
                > sa.tuple_(sa.literal(_parse_time(after_time), tables.UtcDateTime), after_id)
            )
        rows = (await self._conn.execute(query)).all()
        items = [_workspace(row) for row in rows[: page.size]]
        token = ""
        if len(rows) > page.size:
            last = items[-1]
            token = encode_token((last.create_time.isoformat(), last.id))
        return Page(items=items, next_page_token=token)

    async def add_member(self, membership: Membership) -> None:
        await self._conn.execute(
            tables.workspace_members.insert().values(
                workspace_id=membership.workspace_id,
                user_id=membership.user_id,
                role=membership.role.value,
                create_time=membership.create_time,
            )
        )

    async def get_membership(self, workspace_id: str, user_id: str) -> Membership | None:
        m = tables.workspace_members
        query = sa.select(m).where(m.c.workspace_id == workspace_id, m.c.user_id == user_id)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return Membership(row.workspace_id, row.user_id, Role(row.role), row.create_time)


class SqlSessionRepository:
    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, session: Session) -> None:
        await self._conn.execute(
            tables.sessions.insert().values(
                id=session.id,
                user_id=session.user_id,
                create_time=session.create_time,
                last_use_time=session.last_use_time,
                expire_time=session.expire_time,
                client_address=session.client_address,
                user_agent=session.user_agent,
                revoke_time=session.revoke_time,
            )
        )

    async def get(self, session_id: str) -> Session | None:
        query = sa.select(tables.sessions).where(tables.sessions.c.id == session_id)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return Session(
            id=row.id,
            user_id=row.user_id,
            create_time=row.create_time,
            last_use_time=row.last_use_time,
            expire_time=row.expire_time,
            client_address=row.client_address,
            user_agent=row.user_agent,
            revoke_time=row.revoke_time,
        )


def _parse_time(raw: str) -> datetime:
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidArgument("page_token is not valid", reason="INVALID_PAGE_TOKEN") from None


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        display_name=row.display_name,
        password_hash=row.password_hash,
        create_time=row.create_time,
        update_time=row.update_time,
    )


def _workspace(row: Any) -> Workspace:
    return Workspace(
        id=row.id,
        display_name=row.display_name,
        create_time=row.create_time,
        update_time=row.update_time,
    )
