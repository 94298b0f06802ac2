"""SQL implementations of the identity repository ports, bound to one connection."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from cortex_core.adapters.sql import tables
from cortex_core.adapters.sql.connection import Connection
from cortex_core.adapters.sql.paging import paginate
from cortex_core.domain.events import TASK_STREAM_PREFIX
from cortex_core.domain.identity import (
    Membership,
    MemberView,
    RefreshToken,
    Role,
    Session,
    User,
    Workspace,
)
from cortex_core.domain.paging import Page, PageRequest


class SqlUserRepository:
    def __init__(self, connection: Connection) -> None:
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
        query = sa.select(tables.users).where(tables.users.c.id == user_id)
        row = (await self._conn.execute(query)).first()
        return _user(row) if row else None

    async def get_by_email(self, email: str) -> User | None:
        query = sa.select(tables.users).where(tables.users.c.email_normalized == email.casefold())
        row = (await self._conn.execute(query)).first()
        return _user(row) if row else None

    async def set_password_hash(self, user_id: str, password_hash: str, now: datetime) -> None:
        await self._conn.execute(
            tables.users.update()
            .where(tables.users.c.id == user_id)
            .values(password_hash=password_hash, update_time=now)
        )


class SqlWorkspaceRepository:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    async def add(self, workspace: Workspace) -> None:
        await self._conn.execute(
            tables.workspaces.insert().values(
                id=workspace.id,
                display_name=workspace.display_name,
                description=workspace.description,
                token_budget=workspace.token_budget,
                create_time=workspace.create_time,
                update_time=workspace.update_time,
            )
        )

    async def get(self, workspace_id: str) -> Workspace | None:
        query = sa.select(tables.workspaces).where(tables.workspaces.c.id == workspace_id)
        row = (await self._conn.execute(query)).first()
        return _workspace(row) if row else None

    async def update(self, workspace: Workspace) -> None:
        await self._conn.execute(
            tables.workspaces.update()
            .where(tables.workspaces.c.id == workspace.id)
            .values(
                display_name=workspace.display_name,
                description=workspace.description,
                token_budget=workspace.token_budget,
                update_time=workspace.update_time,
            )
        )

    async def delete(self, workspace_id: str) -> None:
        # Its tasks go by cascade; their journals are streams of the event store.
        tasks, events = tables.tasks, tables.events
        journals = sa.select(sa.literal(TASK_STREAM_PREFIX) + tasks.c.id).where(
            tasks.c.workspace_id == workspace_id
        )
        await self._conn.execute(events.delete().where(events.c.stream.in_(journals)))
        await self._conn.execute(
            tables.workspaces.delete().where(tables.workspaces.c.id == workspace_id)
        )

    async def list_for_user(self, user_id: str, page: PageRequest) -> Page[Workspace]:
        w, m = tables.workspaces, tables.workspace_members
        query = sa.select(w).join(m, m.c.workspace_id == w.c.id).where(m.c.user_id == user_id)
        return await paginate(
            self._conn,
            query,
            w.c.create_time,
            w.c.id,
            page,
            _workspace,
            lambda ws: (ws.create_time, ws.id),
        )

    async def add_member(self, membership: Membership) -> None:
        await self._conn.execute(
            tables.workspace_members.insert().values(
                workspace_id=membership.workspace_id,
                user_id=membership.user_id,
                role=membership.role.value,
                create_time=membership.create_time,
            )
        )

    async def set_member_role(self, workspace_id: str, user_id: str, role: Role) -> None:
        m = tables.workspace_members
        await self._conn.execute(
            m.update()
            .where(m.c.workspace_id == workspace_id, m.c.user_id == user_id)
            .values(role=role.value)
        )

    async def remove_member(self, workspace_id: str, user_id: str) -> None:
        m = tables.workspace_members
        await self._conn.execute(
            m.delete().where(m.c.workspace_id == workspace_id, m.c.user_id == user_id)
        )

    async def get_membership(self, workspace_id: str, user_id: str) -> Membership | None:
        m = tables.workspace_members
        query = sa.select(m).where(m.c.workspace_id == workspace_id, m.c.user_id == user_id)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return Membership(row.workspace_id, row.user_id, Role(row.role), row.create_time)

    async def get_as_member(
        self, workspace_id: str, user_id: str
    ) -> tuple[Workspace, Membership] | None:
        w, m = tables.workspaces, tables.workspace_members
        query = (
            sa.select(w, m.c.role, m.c.create_time.label("member_create_time"))
            .join(m, m.c.workspace_id == w.c.id)
            .where(w.c.id == workspace_id, m.c.user_id == user_id)
        )
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        membership = Membership(workspace_id, user_id, Role(row.role), row.member_create_time)
        return _workspace(row), membership

    async def list_members(self, workspace_id: str, page: PageRequest) -> Page[MemberView]:
        m, u = tables.workspace_members, tables.users
        query = (
            sa.select(
                m.c.workspace_id,
                m.c.user_id,
                m.c.role,
                m.c.create_time,
                u.c.email,
                u.c.display_name,
            )
            .join(u, u.c.id == m.c.user_id)
            .where(m.c.workspace_id == workspace_id)
        )
        return await paginate(
            self._conn,
            query,
            m.c.create_time,
            m.c.user_id,
            page,
            lambda row: MemberView(
                workspace_id=row.workspace_id,
                user_id=row.user_id,
                email=row.email,
                display_name=row.display_name,
                role=Role(row.role),
                create_time=row.create_time,
            ),
            lambda member: (member.create_time, member.user_id),
        )

    async def count_owners(self, workspace_id: str) -> int:
        m = tables.workspace_members
        query = (
            sa.select(sa.func.count())
            .select_from(m)
            .where(m.c.workspace_id == workspace_id, m.c.role == Role.OWNER.value)
        )
        return int((await self._conn.execute(query)).scalar_one())


class SqlSessionRepository:
    def __init__(self, connection: Connection) -> None:
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
        return _session(row) if row else None

    async def list_for_user(self, user_id: str, page: PageRequest) -> Page[Session]:
        s = tables.sessions
        query = sa.select(s).where(s.c.user_id == user_id, s.c.revoke_time.is_(None))
        return await paginate(
            self._conn,
            query,
            s.c.last_use_time,
            s.c.id,
            page,
            _session,
            lambda session: (session.last_use_time, session.id),
            newest_first=True,
        )

    async def touch(self, session_id: str, now: datetime) -> None:
        s = tables.sessions
        await self._conn.execute(
            s.update()
            .where(s.c.id == session_id, s.c.last_use_time < now)
            .values(last_use_time=now)
        )

    async def revoke(self, session_id: str, now: datetime) -> bool:
        s = tables.sessions
        result = await self._conn.execute(
            s.update()
            .where(s.c.id == session_id, s.c.revoke_time.is_(None))
            .values(revoke_time=now)
        )
        return bool(result.rowcount)

    async def revoke_all_for_user(
        self, user_id: str, now: datetime, *, keep: str = ""
    ) -> list[str]:
        s = tables.sessions
        where = (s.c.user_id == user_id, s.c.revoke_time.is_(None), s.c.id != keep)
        ids = list((await self._conn.execute(sa.select(s.c.id).where(*where))).scalars())
        if ids:
            await self._conn.execute(s.update().where(s.c.id.in_(ids)).values(revoke_time=now))
        return ids

    async def add_refresh_token(self, token: RefreshToken) -> None:
        await self._conn.execute(
            tables.refresh_tokens.insert().values(
                id=token.id,
                session_id=token.session_id,
                token_hash=token.token_hash,
                create_time=token.create_time,
                expire_time=token.expire_time,
                used_time=token.used_time,
            )
        )

    async def get_refresh_token(self, token_hash: str) -> RefreshToken | None:
        r = tables.refresh_tokens
        row = (await self._conn.execute(sa.select(r).where(r.c.token_hash == token_hash))).first()
        if row is None:
            return None
        return RefreshToken(
            id=row.id,
            session_id=row.session_id,
            token_hash=row.token_hash,
            create_time=row.create_time,
            expire_time=row.expire_time,
            used_time=row.used_time,
        )

    async def consume_refresh_token(self, token_id: str, now: datetime) -> bool:
        # A conditional UPDATE is atomic on both backends: of two concurrent
        # refreshes with the same token exactly one sees rowcount 1.
        r = tables.refresh_tokens
        result = await self._conn.execute(
            r.update().where(r.c.id == token_id, r.c.used_time.is_(None)).values(used_time=now)
        )
        return bool(result.rowcount)


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
        description=row.description,
        create_time=row.create_time,
        update_time=row.update_time,
        token_budget=row.token_budget,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
    )


def _session(row: Any) -> Session:
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


__all__: Sequence[str] = ("SqlSessionRepository", "SqlUserRepository", "SqlWorkspaceRepository")
