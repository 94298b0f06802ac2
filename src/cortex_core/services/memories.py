"""A workspace's long-term memories (MemoryService) and the sweeper of expired ones.

Tenancy (:mod:`cortex_core.services.access`): every call checks the caller's
membership first; a workspace the caller is not in is
``NotFound(WORKSPACE_NOT_FOUND)``, and a memory in it ``NotFound(MEMORY_NOT_FOUND)``
exactly like a missing one. Any member reads; editors and owners create and
delete (``EDITOR_REQUIRED``).

Every change (create, delete, expiry) has its event written in its transaction:
``MemoryCreated``/``MemoryDeleted``; its reaction drops the workspace's cached
context windows, so a deleted memory is never offered to a later context window.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
from collections.abc import Sequence
from datetime import timedelta

from cortex_core import errors
from cortex_core.domain.events import MemoryCreated, MemoryDeleted
from cortex_core.domain.identity import Actor, Caller, new_id
from cortex_core.domain.memories import (
    DEFAULT_SEARCH_PAGE,
    MAX_SEARCH_PAGE,
    Memory,
    MemoryKind,
    ScoredMemory,
    SearchQuery,
    validate_new_memory,
)
from cortex_core.domain.paging import (
    Page,
    PageRequest,
    decode_token,
    encode_token,
    invalid_page_token,
    token_number,
)
from cortex_core.ports import Clock, UnitOfWork, UnitOfWorkFactory
from cortex_core.services.access import memory_not_found, require_memory_access, require_role
from cortex_core.services.dispatcher import EventBus

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


class Memories:
    def __init__(self, *, uow: UnitOfWorkFactory, clock: Clock, events: EventBus) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events

    async def create(
        self,
        caller: Actor,
        workspace_id: str,
        *,
        content: str,
        kind: MemoryKind | None,
        ttl: timedelta | None,
        source_messages: Sequence[str],
    ) -> Memory:
        """Raise InvalidArgument (paths relative to ``memory``), NotFound
        (WORKSPACE_NOT_FOUND, MESSAGE_NOT_FOUND) or PermissionDenied (EDITOR_REQUIRED)."""
        now = self._clock.now()
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id, write=True)
            validate_new_memory(workspace_id, content, kind, ttl, source_messages)
            assert kind is not None
            missing = await uow.memories.missing_messages(workspace_id, source_messages)
            if missing:
                raise errors.NotFound("a source message does not exist", reason="MESSAGE_NOT_FOUND")
            memory = Memory(
                id=new_id(),
                workspace_id=workspace_id,
                content=content,
                kind=kind,
                creator_id=caller.user_id,
                create_time=now,
                expire_time=now + ttl if ttl is not None else None,
                source_messages=tuple(dict.fromkeys(source_messages)),
            )
            await uow.memories.add(memory)
            await self._events.commit(
                uow, [MemoryCreated(actor_id=caller.user_id, time=now, memory=memory)]
            )
        return memory

    async def get(self, caller: Caller, workspace_id: str, memory_id: str) -> Memory:
        async with self._uow() as uow:
            await require_memory_access(uow, caller, workspace_id)
            memory = await uow.memories.get(workspace_id, memory_id, self._clock.now())
        if memory is None:
            raise memory_not_found()
        return memory

    async def list(
        self, caller: Caller, workspace_id: str, kind: MemoryKind | None, page: PageRequest
    ) -> Page[Memory]:
        """Unexpired memories, newest first; the page token is bound to ``kind``."""
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id)
            return await uow.memories.list(workspace_id, kind, page, self._clock.now())

    async def delete(self, caller: Caller, workspace_id: str, memory_id: str) -> None:
        now = self._clock.now()
        async with self._uow() as uow:
            await require_memory_access(uow, caller, workspace_id)
            memory = await uow.memories.get(workspace_id, memory_id, now)
            if memory is None:
                raise memory_not_found()
            await require_role(uow, caller, workspace_id, write=True)
            await uow.memories.delete(workspace_id, memory_id)
            await self._events.commit(
                uow, [MemoryDeleted(actor_id=caller.user_id, time=now, memory=memory)]
            )

    async def search(
        self,
        caller: Actor,
        workspace_id: str,
        query: str,
        kind: MemoryKind | None,
        page_size: int,
        page_token: str,
    ) -> Page[ScoredMemory]:
        """Most relevant first (stale memories included, flagged).

        Pages by offset: the token holds the offset and a fingerprint of
        (workspace, query, kind), so it is INVALID_PAGE_TOKEN with other fields.
        Results can shift between pages if memories change meanwhile.
        """
        async with self._uow() as uow:
            # Membership first: an outsider learns nothing, even from bad input.
            await require_role(uow, caller, workspace_id)
            parsed = SearchQuery.parse(query)
            size, offset = _search_page(page_size, page_token, workspace_id, query, kind)
            hits = await uow.memories.search(
                workspace_id,
                parsed,
                kind,
                offset=offset,
                limit=size + 1,
                now=self._clock.now(),
            )
        token = ""
        if len(hits) > size:
            token = encode_token(("s", str(offset + size), _fingerprint(workspace_id, query, kind)))
        return Page(items=hits[:size], next_page_token=token)

    async def for_context(
        self, uow: UnitOfWork, workspace_id: str, query: str, limit: int
    ) -> builtins.list[ScoredMemory]:
        """For context windows, read in the window's unit of work (no caller check:
        the caller was checked already): the ``limit`` most relevant memories that
        are neither expired nor stale; empty when ``query`` has no searchable word."""
        try:
            parsed = SearchQuery.parse(query[:2000])
        except errors.InvalidArgument:
            return []
        return await uow.memories.search(
            workspace_id,
            parsed,
            None,
            offset=0,
            limit=limit,
            now=self._clock.now(),
            include_stale=False,
        )

    async def sweep(self) -> int:
        """Delete every memory expired by now (in batches); publish MemoryDeleted
        (expired) for each; return how many were deleted."""
        total = 0
        while True:
            now = self._clock.now()
            async with self._uow() as uow:
                expired = await uow.memories.delete_expired(now, SWEEP_BATCH)
                await self._events.commit(
                    uow,
                    [
                        MemoryDeleted(actor_id="", time=now, memory=memory, expired=True)
                        for memory in expired
                    ],
                )
            if not expired:
                return total
            total += len(expired)
            if len(expired) < SWEEP_BATCH:
                return total


def _fingerprint(workspace_id: str, query: str, kind: MemoryKind | None) -> str:
    raw = "\x00".join((workspace_id, query, kind.value if kind else ""))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _search_page(
    page_size: int, page_token: str, workspace_id: str, query: str, kind: MemoryKind | None
) -> tuple[int, int]:
    if page_size < 0:
        raise errors.InvalidArgument(
            "page_size must not be negative",
            [errors.FieldViolation("page_size", "must be 0 (default) or more")],
        )
    size = min(page_size or DEFAULT_SEARCH_PAGE, MAX_SEARCH_PAGE)
    if not page_token:
        return size, 0
    key = decode_token(page_token)
    if len(key) != 3 or key[0] != "s" or key[2] != _fingerprint(workspace_id, query, kind):
        raise invalid_page_token("use a token from the same search")
    return size, token_number(key[1])
