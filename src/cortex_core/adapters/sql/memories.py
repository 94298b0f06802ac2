"""SQL :class:`~cortex_core.ports.MemoryRepository`, with full-text search per dialect.

Search is the only dialect-specific part (the objects are made by migration 0005):

- SQLite: FTS5 ``memories_fts MATCH '"t1" OR "t2"'`` ranked by ``bm25()``
  (lower is better); the score is ``r / (1 + r)`` with ``r = -bm25``.
- PostgreSQL: ``search_vector @@ websearch_to_tsquery('english', 't1 or t2')``
  ranked by ``ts_rank_cd(…, 32)``, which is already ``rank / (rank + 1)``.

Both match any of the query's words (stop words were removed by
:class:`~cortex_core.domain.memories.SearchQuery`) and stem English words.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from cortex_core.adapters.sql import tables
from cortex_core.adapters.sql.connection import Connection
from cortex_core.adapters.sql.paging import paginate
from cortex_core.domain.memories import Memory, MemoryKind, ScoredMemory, SearchQuery
from cortex_core.domain.paging import Page, PageRequest

_m = tables.memories
_s = tables.memory_sources
_messages = tables.messages
_conversations = tables.conversations


def _live(workspace_id: str, now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        _m.c.workspace_id == workspace_id,
        sa.or_(_m.c.expire_time.is_(None), _m.c.expire_time > now),
    )


class SqlMemoryRepository:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._dialect = connection.dialect.name

    async def add(self, memory: Memory) -> None:
        await self._conn.execute(
            _m.insert().values(
                id=memory.id,
                workspace_id=memory.workspace_id,
                content=memory.content,
                kind=memory.kind.value,
                creator_id=memory.creator_id,
                create_time=memory.create_time,
                expire_time=memory.expire_time,
                stale=memory.stale,
            )
        )
        if memory.source_messages:
            await self._conn.execute(
                _s.insert(),
                [
                    {
                        "memory_id": memory.id,
                        "message_name": name,
                        "conversation_name": name.rsplit("/messages/", 1)[0],
                    }
                    for name in dict.fromkeys(memory.source_messages)
                ],
            )

    async def get(self, workspace_id: str, memory_id: str, now: datetime) -> Memory | None:
        query = sa.select(_m).where(_live(workspace_id, now), _m.c.id == memory_id)
        row = (await self._conn.execute(query)).first()
        if row is None:
            return None
        return (await self._with_sources([row]))[0]

    async def list(
        self, workspace_id: str, kind: MemoryKind | None, page: PageRequest, now: datetime
    ) -> Page[Memory]:
        query = sa.select(_m).where(_live(workspace_id, now))
        if kind is not None:
            query = query.where(_m.c.kind == kind.value)
        rows = await paginate(
            self._conn,
            query,
            _m.c.create_time,
            _m.c.id,
            page,
            lambda row: row,
            lambda row: (row.create_time, row.id),
            newest_first=True,
            scope=(kind.value if kind else "",),
        )
        items = await self._with_sources(rows.items)
        return Page(items=items, next_page_token=rows.next_page_token)

    async def search(
        self,
        workspace_id: str,
        query: SearchQuery,
        kind: MemoryKind | None,
        *,
        offset: int,
        limit: int,
        now: datetime,
        include_stale: bool = True,
    ) -> builtins.list[ScoredMemory]:
        if not query.terms or limit <= 0:
            return []
        if self._dialect == "sqlite":
            fts = sa.table("memories_fts", sa.column("memory_id"))
            rank = sa.func.bm25(sa.literal_column("memories_fts"))
            select = (
                sa.select(_m, rank.label("rank"))
                .join(fts, fts.c.memory_id == _m.c.id)
                .where(
                    sa.literal_column("memories_fts").op("MATCH")(
                        " OR ".join('"' + t.replace('"', '""') + '"' for t in query.terms)
                    )
                )
                .order_by(rank, _m.c.create_time.desc(), _m.c.id.desc())
            )
        else:
            vector: sa.ColumnElement[Any] = sa.literal_column("memories.search_vector")
            tsquery = sa.func.websearch_to_tsquery(
                sa.literal_column("'english'"),  # an untyped literal: resolved as regconfig
                " or ".join(query.terms),
            )
            rank = sa.func.ts_rank_cd(vector, tsquery, 32)
            select = (
                sa.select(_m, rank.label("rank"))
                .where(vector.op("@@")(tsquery))
                .order_by(rank.desc(), _m.c.create_time.desc(), _m.c.id.desc())
            )
        select = select.where(_live(workspace_id, now))
        if kind is not None:
            select = select.where(_m.c.kind == kind.value)
        if not include_stale:
            select = select.where(_m.c.stale.is_(False))
        rows = (await self._conn.execute(select.offset(offset).limit(limit))).all()
        memories = await self._with_sources(rows)
        return [
            ScoredMemory(memory, _score(float(row.rank), self._dialect))
            for memory, row in zip(memories, rows, strict=True)
        ]

    async def delete(self, workspace_id: str, memory_id: str) -> bool:
        result = await self._conn.execute(
            _m.delete().where(_m.c.workspace_id == workspace_id, _m.c.id == memory_id)
        )
        return bool(result.rowcount)

    async def delete_expired(self, now: datetime, limit: int) -> builtins.list[Memory]:
        query = (
            sa.select(_m)
            .where(_m.c.expire_time.is_not(None), _m.c.expire_time <= now)
            .order_by(_m.c.expire_time)
            .limit(limit)
        )
        expired = await self._with_sources((await self._conn.execute(query)).all())
        if expired:
            await self._conn.execute(_m.delete().where(_m.c.id.in_([m.id for m in expired])))
        return expired

    async def missing_messages(self, workspace_id: str, names: Sequence[str]) -> builtins.list[str]:
        if not names:
            return []
        wanted = {name: name.split("/") for name in names}
        ids = {parts[-1] for parts in wanted.values()}
        query = (
            sa.select(_messages.c.id, _messages.c.conversation_id)
            .join(_conversations, _conversations.c.id == _messages.c.conversation_id)
            .where(_conversations.c.workspace_id == workspace_id, _messages.c.id.in_(ids))
        )
        found = {(row.conversation_id, row.id) for row in await self._conn.execute(query)}
        return [name for name, parts in wanted.items() if (parts[3], parts[5]) not in found]

    async def mark_stale_derived_from(self, message_names: Sequence[str]) -> builtins.list[Memory]:
        if not message_names:
            return []
        return await self._mark_stale(_s.c.message_name.in_(list(message_names)))

    async def mark_stale_derived_from_conversation(
        self, conversation_name: str
    ) -> builtins.list[Memory]:
        return await self._mark_stale(_s.c.conversation_name == conversation_name)

    async def delete_derived_from_conversation(
        self, conversation_name: str
    ) -> builtins.list[Memory]:
        ids = sa.select(_s.c.memory_id).where(_s.c.conversation_name == conversation_name)
        rows = (await self._conn.execute(sa.select(_m).where(_m.c.id.in_(ids)))).all()
        derived = await self._with_sources(rows)
        if derived:
            await self._conn.execute(_m.delete().where(_m.c.id.in_([m.id for m in derived])))
        return derived

    async def _mark_stale(self, sources: sa.ColumnElement[bool]) -> builtins.list[Memory]:
        ids = sa.select(_s.c.memory_id).where(sources)
        where = sa.and_(_m.c.id.in_(ids), _m.c.stale.is_(False))
        rows = (await self._conn.execute(sa.select(_m).where(where))).all()
        if not rows:
            return []
        await self._conn.execute(
            _m.update().where(_m.c.id.in_([r.id for r in rows])).values(stale=True)
        )
        return [dataclasses.replace(m, stale=True) for m in await self._with_sources(rows)]

    async def _with_sources(self, rows: Sequence[Any]) -> builtins.list[Memory]:
        """Rows of ``memories`` as domain objects, with their source messages."""
        if not rows:
            return []
        ids = [row.id for row in rows]
        query = sa.select(_s.c.memory_id, _s.c.message_name).where(_s.c.memory_id.in_(ids))
        sources: dict[str, list[str]] = {}
        for row in await self._conn.execute(query.order_by(_s.c.message_name)):
            sources.setdefault(row.memory_id, []).append(row.message_name)
        return [_memory(row, tuple(sources.get(row.id, ()))) for row in rows]


def _score(rank: float, dialect: str) -> float:
    relevance = -rank if dialect == "sqlite" else rank
    if dialect == "sqlite":
        relevance = max(relevance, 0.0)
        return relevance / (1.0 + relevance)
    return min(max(relevance, 0.0), 1.0)


def _memory(row: Any, sources: tuple[str, ...]) -> Memory:
    return Memory(
        id=row.id,
        workspace_id=row.workspace_id,
        content=row.content,
        kind=MemoryKind(row.kind),
        creator_id=row.creator_id,
        create_time=row.create_time,
        expire_time=row.expire_time,
        source_messages=sources,
        stale=bool(row.stale),
    )
