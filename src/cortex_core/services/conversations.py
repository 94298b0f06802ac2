"""Conversations and their messages (ConversationService; the streamed reply is
:mod:`cortex_core.services.replies`).

Viewers read; editors and owners write (checked by
:mod:`cortex_core.services.access`). Every change's event is written in its
transaction (``EventBus.commit``); the reactions
(:mod:`cortex_core.services.reactions`) drop the cached context windows it affects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, MutableSequence, Sequence

from cortex_core import errors
from cortex_core.domain import names
from cortex_core.domain.conversations import (
    MAX_SYSTEM_PROMPT,
    MAX_TITLE,
    Conversation,
    Message,
)
from cortex_core.domain.events import ConversationCreated, ConversationDeleted, ConversationUpdated
from cortex_core.domain.identity import Caller, new_id, reject, text_violation
from cortex_core.domain.paging import (
    Page,
    PageRequest,
    decode_token,
    encode_token,
    invalid_page_token,
    token_number,
)
from cortex_core.domain.tools import MAX_CONVERSATION_TOOLS
from cortex_core.ports import Clock, UnitOfWorkFactory
from cortex_core.services.access import require_conversation, require_role
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.tool_invoker import ToolInvoker

UPDATABLE_FIELDS = frozenset({"title", "system_prompt", "tools"})
_TOOL_PREFIX = names.TOOL.format("")


@dataclasses.dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[Message]
    next_page_token: str
    previous_page_token: str


class Conversations:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        events: EventBus,
        tools: ToolInvoker,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events
        self._tools = tools

    async def create(
        self,
        caller: Caller,
        workspace_id: str,
        title: str,
        system_prompt: str,
        tools: Collection[str] = (),
    ) -> Conversation:
        """``tools`` are ``tools/{tool}`` names; each must be a tool the invoker knows."""
        tool_ids = self._validate(title, system_prompt, tools, UPDATABLE_FIELDS)
        now = self._clock.now()
        conversation = Conversation(
            id=new_id(),
            workspace_id=workspace_id,
            title=title.strip(),
            system_prompt=system_prompt,
            creator_id=caller.user_id,
            message_count=0,
            create_time=now,
            update_time=now,
            tools=tool_ids,
        )
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id, write=True)
            await uow.conversations.add(conversation)
            await self._events.commit(
                uow,
                [ConversationCreated(actor_id=caller.user_id, time=now, conversation=conversation)],
            )
        return conversation

    async def get(self, caller: Caller, workspace_id: str, conversation_id: str) -> Conversation:
        async with self._uow() as uow:
            return await require_conversation(uow, caller, workspace_id, conversation_id)

    async def list(
        self, caller: Caller, workspace_id: str, page: PageRequest
    ) -> Page[Conversation]:
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id)
            return await uow.conversations.list_in_workspace(workspace_id, page)

    async def update(
        self,
        caller: Caller,
        workspace_id: str,
        conversation_id: str,
        *,
        title: str,
        system_prompt: str,
        tools: Collection[str] = (),
        fields: Collection[str],
    ) -> Conversation:
        unknown = sorted(set(fields) - UPDATABLE_FIELDS)
        if unknown:
            raise errors.InvalidArgument(
                "update_mask names fields that cannot be updated",
                [errors.FieldViolation("update_mask", f"'{f}' cannot be updated") for f in unknown],
            )
        chosen = set(fields) or set(UPDATABLE_FIELDS)
        tool_ids = self._validate(title, system_prompt, tools, chosen)
        async with self._uow() as uow:
            conversation = await require_conversation(
                uow, caller, workspace_id, conversation_id, write=True
            )
            conversation = dataclasses.replace(
                conversation,
                title=title.strip() if "title" in chosen else conversation.title,
                system_prompt=system_prompt
                if "system_prompt" in chosen
                else conversation.system_prompt,
                tools=tool_ids if "tools" in chosen else conversation.tools,
                update_time=self._clock.now(),
            )
            await uow.conversations.update(conversation)
            await self._events.commit(
                uow,
                [
                    ConversationUpdated(
                        actor_id=caller.user_id,
                        time=conversation.update_time,
                        conversation=conversation,
                        fields=tuple(sorted(chosen)),
                    )
                ],
            )
        return conversation

    async def delete(self, caller: Caller, workspace_id: str, conversation_id: str) -> None:
        """Delete it with its messages, summaries and the memories derived from them."""
        async with self._uow() as uow:
            conversation = await require_conversation(
                uow, caller, workspace_id, conversation_id, write=True
            )
            await uow.conversations.delete(conversation.id)
            # Provenance: memories derived from its messages are flagged stale
            # (kept, visible as such, and left out of every context window).
            await uow.memories.mark_stale_derived_from_conversation(conversation.name)
            await self._events.commit(
                uow,
                [
                    ConversationDeleted(
                        actor_id=caller.user_id, time=self._clock.now(), conversation=conversation
                    )
                ],
            )

    async def list_messages(
        self,
        caller: Caller,
        workspace_id: str,
        conversation_id: str,
        *,
        page_size: int,
        page_token: str,
        newest_first: bool,
    ) -> MessagePage:
        """A page in either order, with tokens to the next and the previous page."""
        size = PageRequest.parse(page_size, "").size
        order = "desc" if newest_first else "asc"
        direction, position = "next", None
        if page_token:
            key = decode_token(page_token)
            if len(key) != 4 or key[:2] != (conversation_id, order):
                raise invalid_page_token("use a token from the same listing")
            direction, position = key[2], token_number(key[3])
        async with self._uow() as uow:
            await require_conversation(uow, caller, workspace_id, conversation_id)
            forward = direction == "next"
            # Positions grow with time: "next" in newest-first order means smaller positions.
            ascending = forward != newest_first
            bound = {"after": position} if ascending else {"before": position}
            rows = await uow.conversations.list_messages(
                conversation_id, limit=size + 1, newest_first=not ascending, **bound
            )
            more = len(rows) > size
            rows = rows[:size]
            if not forward:
                rows.reverse()
        if not rows:
            return MessagePage([], "", "")

        def token(direction: str, message: Message) -> str:
            return encode_token((conversation_id, order, direction, str(message.position)))

        has_next = more if forward else True
        has_previous = (position is not None) if forward else more
        return MessagePage(
            rows,
            token("next", rows[-1]) if has_next else "",
            token("prev", rows[0]) if has_previous else "",
        )

    def _validate(
        self, title: str, system_prompt: str, tools: Collection[str], fields: Collection[str]
    ) -> tuple[str, ...]:
        """Raise InvalidArgument naming every bad field; return the tool ids."""
        violations = [
            text_violation(title, "title", required=False, limit=MAX_TITLE)
            if "title" in fields
            else None,
            text_violation(system_prompt, "system_prompt", required=False, limit=MAX_SYSTEM_PROMPT)
            if "system_prompt" in fields
            else None,
        ]
        tool_ids: MutableSequence[str] = []
        if "tools" in fields:
            violations.extend(self._tool_violations(tuple(tools), tool_ids))
        reject(violations)
        return tuple(tool_ids)

    def _tool_violations(
        self, tools: Sequence[str], tool_ids: MutableSequence[str]
    ) -> Sequence[errors.FieldViolation | None]:
        if len(tools) > MAX_CONVERSATION_TOOLS:
            return [
                errors.FieldViolation(
                    "tools", f"must name at most {MAX_CONVERSATION_TOOLS} tools", "TOO_MANY"
                )
            ]
        found: MutableSequence[errors.FieldViolation | None] = []
        for index, name in enumerate(tools):
            field = f"tools[{index}]"
            tool_id = name.removeprefix(_TOOL_PREFIX)
            if not name.startswith(_TOOL_PREFIX) or self._tools.get(tool_id) is None:
                found.append(
                    errors.FieldViolation(field, f"{name!r} is not a known tool", "TOOL_NOT_FOUND")
                )
            elif tool_id in tool_ids:
                found.append(errors.FieldViolation(field, f"{name!r} is listed twice", "DUPLICATE"))
            else:
                tool_ids.append(tool_id)
        return found
