"""SQL implementation of :class:`~cortex_core.ports.ConversationRepository`."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc

from cortex_core import errors
from cortex_core.adapters.sql import tables, tool_codec
from cortex_core.adapters.sql.connection import Connection
from cortex_core.adapters.sql.paging import paginate
from cortex_core.domain.conversations import (
    Conversation,
    FinishReason,
    Message,
    MessageRole,
    Summary,
)
from cortex_core.domain.paging import Page, PageRequest
from cortex_core.domain.tools import ToolCall

c, m, s = tables.conversations, tables.messages, tables.summaries


class SqlConversationRepository:
    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    async def add(self, conversation: Conversation) -> None:
        await self._conn.execute(
            c.insert().values(
                id=conversation.id,
                workspace_id=conversation.workspace_id,
                title=conversation.title,
                system_prompt=conversation.system_prompt,
                creator_id=conversation.creator_id,
                message_count=conversation.message_count,
                create_time=conversation.create_time,
                update_time=conversation.update_time,
                last_message_time=conversation.last_message_time,
                tools=json.dumps(list(conversation.tools)),
            )
        )

    async def get(self, workspace_id: str, conversation_id: str) -> Conversation | None:
        query = sa.select(c).where(c.c.id == conversation_id, c.c.workspace_id == workspace_id)
        row = (await self._conn.execute(query)).first()
        return _conversation(row) if row else None

    async def update(self, conversation: Conversation) -> None:
        await self._conn.execute(
            c.update()
            .where(c.c.id == conversation.id)
            .values(
                title=conversation.title,
                system_prompt=conversation.system_prompt,
                tools=json.dumps(list(conversation.tools)),
                update_time=conversation.update_time,
            )
        )

    async def delete(self, conversation_id: str) -> None:
        # Children first: SQLite only cascades with foreign keys on, and the
        # explicit deletes keep both backends identical.
        await self._conn.execute(s.delete().where(s.c.conversation_id == conversation_id))
        await self._conn.execute(m.delete().where(m.c.conversation_id == conversation_id))
        await self._conn.execute(c.delete().where(c.c.id == conversation_id))

    async def list_in_workspace(self, workspace_id: str, page: PageRequest) -> Page[Conversation]:
        return await paginate(
            self._conn,
            sa.select(c).where(c.c.workspace_id == workspace_id),
            c.c.create_time,
            c.c.id,
            page,
            _conversation,
            lambda conv: (conv.create_time, conv.id),
            newest_first=True,
        )

    async def append_message(self, message: Message) -> Message:
        bumped = await self._conn.execute(
            c.update()
            .where(c.c.id == message.conversation_id)
            .values(
                message_count=c.c.message_count + 1,
                last_message_time=message.create_time,
                update_time=message.create_time,
            )
            .returning(c.c.message_count)
        )
        position = bumped.scalar_one()
        stored = _replace_position(message, position)
        # No savepoint around it (two round trips more, with SQLite's writer lock
        # held): a duplicate key fails the whole unit of work, which rolls back.
        try:
            await self._conn.execute(
                m.insert().values(
                    id=stored.id,
                    conversation_id=stored.conversation_id,
                    position=position,
                    role=stored.role.value,
                    content=stored.content,
                    metadata=json.dumps(dict(stored.metadata)),
                    token_count=stored.token_count,
                    author_id=stored.author_id,
                    finish_reason=stored.finish_reason.value,
                    model=stored.model,
                    idempotency_key=stored.idempotency_key,
                    create_time=stored.create_time,
                    reply_to=stored.reply_to,
                    tool_calls=tool_codec.calls_json(stored.tool_calls),
                    tool_result=tool_codec.result_json(stored.tool_result),
                )
            )
        except exc.IntegrityError:
            raise errors.AlreadyExists(
                "this idempotency key was already used", reason="IDEMPOTENCY_KEY_USED"
            ) from None
        return stored

    async def set_tool_calls(
        self, conversation_id: str, message_id: str, calls: tuple[ToolCall, ...]
    ) -> None:
        await self._conn.execute(
            m.update()
            .where(m.c.conversation_id == conversation_id, m.c.id == message_id)
            .values(tool_calls=tool_codec.calls_json(calls))
        )

    async def get_message_by_key(
        self, conversation_id: str, idempotency_key: str
    ) -> Message | None:
        query = sa.select(m, c.c.workspace_id).join(c, c.c.id == m.c.conversation_id)
        query = query.where(
            m.c.conversation_id == conversation_id, m.c.idempotency_key == idempotency_key
        )
        row = (await self._conn.execute(query)).first()
        return _message(row) if row else None

    async def list_messages(
        self,
        conversation_id: str,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int,
        newest_first: bool = False,
    ) -> list[Message]:
        query = (
            sa.select(m, c.c.workspace_id)
            .join(c, c.c.id == m.c.conversation_id)
            .where(m.c.conversation_id == conversation_id)
        )
        if after is not None:
            query = query.where(m.c.position > after)
        if before is not None:
            query = query.where(m.c.position < before)
        query = query.order_by(m.c.position.desc() if newest_first else m.c.position)
        rows = (await self._conn.execute(query.limit(limit))).all()
        return [_message(row) for row in rows]

    async def record_usage(
        self, workspace_id: str, conversation_id: str, prompt: int, completion: int
    ) -> None:
        # Increments in the database, so concurrent replies never lose counts.
        await self._conn.execute(
            c.update()
            .where(c.c.id == conversation_id)
            .values(
                prompt_tokens=c.c.prompt_tokens + prompt,
                completion_tokens=c.c.completion_tokens + completion,
            )
        )
        w = tables.workspaces
        await self._conn.execute(
            w.update()
            .where(w.c.id == workspace_id)
            .values(
                prompt_tokens=w.c.prompt_tokens + prompt,
                completion_tokens=w.c.completion_tokens + completion,
            )
        )

    async def reply_to(self, conversation_id: str, user_message_id: str) -> Message | None:
        query = (
            sa.select(m, c.c.workspace_id)
            .join(c, c.c.id == m.c.conversation_id)
            .where(m.c.conversation_id == conversation_id, m.c.reply_to == user_message_id)
        )
        row = (await self._conn.execute(query)).first()
        return _message(row) if row else None

    async def claim_reply(
        self, conversation_id: str, reply_id: str, now: datetime, lease_until: datetime
    ) -> str | None:
        # One conditional UPDATE: of two replicas racing, exactly one sees a row.
        claimed = await self._conn.execute(
            c.update()
            .where(
                c.c.id == conversation_id,
                sa.or_(c.c.reply_id.is_(None), c.c.reply_lease_until < now),
            )
            .values(reply_id=reply_id, reply_lease_until=lease_until)
        )
        if claimed.rowcount:
            return None
        running = await self._conn.execute(sa.select(c.c.reply_id).where(c.c.id == conversation_id))
        return str(running.scalar_one_or_none() or "")

    async def release_reply(self, conversation_id: str, reply_id: str) -> None:
        await self._conn.execute(
            c.update()
            .where(c.c.id == conversation_id, c.c.reply_id == reply_id)
            .values(reply_id=None, reply_lease_until=None)
        )

    async def latest_summary(self, conversation_id: str) -> Summary | None:
        query = (
            sa.select(s, c.c.workspace_id)
            .join(c, c.c.id == s.c.conversation_id)
            .where(s.c.conversation_id == conversation_id)
            .order_by(s.c.last_position.desc(), s.c.create_time.desc())
            .limit(1)
        )
        row = (await self._conn.execute(query)).first()
        return _summary(row) if row else None

    async def add_summary(self, summary: Summary) -> None:
        await self._conn.execute(
            s.insert().values(
                id=summary.id,
                conversation_id=summary.conversation_id,
                text=summary.text,
                first_position=summary.first_position,
                last_position=summary.last_position,
                first_message_id=summary.first_message_id,
                last_message_id=summary.last_message_id,
                message_count=summary.message_count,
                token_count=summary.token_count,
                model=summary.model,
                create_time=summary.create_time,
            )
        )


def _replace_position(message: Message, position: int) -> Message:
    return dataclasses.replace(message, position=position)


def _conversation(row: Any) -> Conversation:
    return Conversation(
        id=row.id,
        workspace_id=row.workspace_id,
        title=row.title,
        system_prompt=row.system_prompt,
        creator_id=row.creator_id,
        message_count=row.message_count,
        create_time=row.create_time,
        update_time=row.update_time,
        last_message_time=row.last_message_time,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        tools=tuple(json.loads(row.tools or "[]")),
    )


def _message(row: Any) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        workspace_id=row.workspace_id,
        position=row.position,
        role=MessageRole(row.role),
        content=row.content,
        token_count=row.token_count,
        create_time=row.create_time,
        author_id=row.author_id,
        finish_reason=FinishReason(row.finish_reason),
        model=row.model,
        metadata=json.loads(row.metadata or "{}"),
        idempotency_key=row.idempotency_key,
        reply_to=row.reply_to,
        tool_calls=tool_codec.calls_of(row.tool_calls),
        tool_result=tool_codec.result_of(row.tool_result),
    )


def _summary(row: Any) -> Summary:
    return Summary(
        id=row.id,
        conversation_id=row.conversation_id,
        workspace_id=row.workspace_id,
        text=row.text,
        first_position=row.first_position,
        last_position=row.last_position,
        first_message_id=row.first_message_id,
        last_message_id=row.last_message_id,
        message_count=row.message_count,
        token_count=row.token_count,
        model=row.model,
        create_time=row.create_time,
    )
