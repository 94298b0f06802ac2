"""The context manager: what the model sees, and the summaries that keep it small.

``build`` assembles a :class:`~cortex_core.domain.context_window.ContextWindow`
from the conversation's system prompt, newest summary checkpoint, the user's
profile, relevant memories and recent messages (see ``domain/context_window``
for the rules). When history no longer fits, a summary job is queued in the
database as an internal task (``TaskKind.SUMMARY``, so it survives a restart
and runs on the one task runner, with its leases and retries) and
:meth:`ContextManager.run_summary_job` writes the next checkpoint with the LLM
provider.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from cortex_core import errors
from cortex_core.domain.cache_keys import context_window_key
from cortex_core.domain.context_window import (
    Candidate,
    ContextWindow,
    ItemKind,
    assemble,
)
from cortex_core.domain.conversations import Conversation, Message, MessageRole, Summary
from cortex_core.domain.events import SummaryWritten
from cortex_core.domain.identity import Caller, User, new_id
from cortex_core.domain.llm import PromptMessage, tool_message
from cortex_core.domain.tasks import Task, TaskKind
from cortex_core.ports import (
    Cache,
    Clock,
    LlmProvider,
    TaskSignals,
    TokenCounter,
    UnitOfWork,
    UnitOfWorkFactory,
)
from cortex_core.services.access import require_conversation
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.tasks import queue_job

log = logging.getLogger(__name__)

HISTORY_LIMIT = 2000  # messages considered for one window
WINDOW_TTL = 300.0  # seconds a rendered window stays cached
SUMMARY_INSTRUCTION = "Summarize the conversation below"
# (unit of work, workspace id, query, limit) -> the most relevant memories
MemorySource = Callable[[UnitOfWork, str, str, int], Awaitable[Sequence[Candidate]]]


async def _no_memories(
    uow: UnitOfWork, workspace_id: str, query: str, limit: int
) -> Sequence[Candidate]:
    return ()


@dataclasses.dataclass(slots=True)
class Sources:
    """What one context window is assembled from."""

    messages: list[Message]  # oldest first
    summary: Summary | None
    memories: Sequence[Candidate]


class ContextManager:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        counter: TokenCounter,
        provider: LlmProvider,
        default_budget: int,
        cache: Cache,
        events: EventBus,
        signals: TaskSignals,
        memories: MemorySource = _no_memories,
    ) -> None:
        self.cache = cache
        self._events = events
        self._uow = uow
        self._clock = clock
        self._counter = counter
        self._provider = provider
        self.default_budget = default_budget
        self.memories = memories
        self._signals = signals

    async def window(
        self,
        caller: Caller,
        workspace_id: str,
        conversation_id: str,
        budget: int,
        render: Callable[[ContextWindow], bytes],
    ) -> bytes:
        """GetContextWindow: the window the next reply would get, rendered by
        ``render`` (0 means the default budget). Raise NotFound
        (CONVERSATION_NOT_FOUND) or InvalidArgument for a negative budget.

        Cache-aside: rendered windows are cached per conversation, budget and user
        for ``WINDOW_TTL`` seconds and dropped by every write that changes them
        (the cache-invalidation reactions in :mod:`cortex_core.services.reactions`).
        Access is checked on every call, so a cached window only goes to a member.
        """
        if budget < 0:
            raise errors.InvalidArgument(
                "token_budget must not be negative",
                [errors.FieldViolation("token_budget", "must be 0 (default) or more")],
            )
        budget = budget or self.default_budget
        async with self._uow() as uow:
            conversation = await require_conversation(uow, caller, workspace_id, conversation_id)
        key = context_window_key(workspace_id, conversation_id, f"{budget}:{caller.user_id}")
        cached = await self.cache.get(key)
        if cached is not None:
            return cached
        rendered = render(await self.build(conversation, caller.user, budget))
        await self.cache.set(key, rendered, WINDOW_TTL)
        return rendered

    async def build(self, conversation: Conversation, user: User, budget: int) -> ContextWindow:
        """Assemble the window from one short read transaction (queueing a summary
        job, in another, when history no longer fits)."""
        async with self._uow() as uow:
            sources = await self.read(uow, conversation)
        return await self.assemble(conversation, user, budget, sources)

    async def read(
        self,
        uow: UnitOfWork,
        conversation: Conversation,
        *,
        query: str | None = None,
        empty: bool = False,
    ) -> Sources:
        """What a window is built from, read in the caller's unit of work: recent
        messages, the newest summary and the memories relevant to ``query`` (by
        default the newest user message). A send reads before storing its message
        (so one transaction does both) and passes that message's text as ``query``;
        ``empty`` says the caller saw, in this unit of work, that the conversation
        has no messages yet (so there is no history or summary to read)."""
        recent: list[Message] = []
        summary = None
        if not empty:
            recent = await uow.conversations.list_messages(
                conversation.id, limit=HISTORY_LIMIT, newest_first=True
            )
            summary = await uow.conversations.latest_summary(conversation.id)
        messages = list(reversed(recent))
        if query is None:
            query = next((m.content for m in recent if m.role is MessageRole.USER), "")
        memories = await self.memories(uow, conversation.workspace_id, query, 10) if query else ()
        return Sources(messages, summary, memories)

    async def assemble(
        self, conversation: Conversation, user: User, budget: int, sources: Sources
    ) -> ContextWindow:
        """The window over ``sources``; queue a summary job when history is cut and
        messages older than the newest are not summarized yet."""
        summary, messages = sources.summary, sources.messages
        profile_text = f"The user is {user.display_name} <{user.email}>."
        window = assemble(
            budget=budget,
            system_prompt=self._candidate(
                ItemKind.SYSTEM_PROMPT, conversation.name, conversation.system_prompt
            )
            if conversation.system_prompt
            else None,
            summary=(summary, self._candidate(ItemKind.SUMMARY, summary.name, summary.text))
            if summary
            else None,
            profile=self._candidate(ItemKind.PROFILE, user.name, profile_text),
            memories=sources.memories,
            messages=messages,
        )
        last_summarized = summary.last_position if summary else 0
        behind = len(messages) > 1 and last_summarized < messages[-2].position
        if window.overflowed and behind:
            async with self._uow() as uow:
                await self.request_summary(uow, conversation, budget)
        return window

    def _candidate(self, kind: ItemKind, source: str, text: str) -> Candidate:
        return Candidate(kind, source, text, self._counter.count(text))

    async def request_summary(
        self, uow: UnitOfWork, conversation: Conversation, budget: int
    ) -> None:
        """Queue a summary job on the task runner (one per conversation at a time)
        and commit ``uow``."""
        queued = await queue_job(
            uow,
            TaskKind.SUMMARY,
            conversation.workspace_id,
            conversation.id,
            {"conversation_id": conversation.id, "token_budget": budget},
            self._clock.now(),
        )
        await uow.commit()
        if queued is not None:
            await self._signals.work_queued()

    async def summarize(self, caller: Caller, workspace_id: str, conversation_id: str) -> Summary:
        """Write a checkpoint up to the newest message now (SummarizeConversation)."""
        async with self._uow() as uow:
            conversation = await require_conversation(
                uow, caller, workspace_id, conversation_id, write=True
            )
        summary = await self.checkpoint(conversation)
        if summary is None:
            raise errors.FailedPrecondition(
                "the conversation has no messages to summarize", reason="CONVERSATION_EMPTY"
            )
        return summary

    async def checkpoint(self, conversation: Conversation) -> Summary | None:
        """A summary covering every message up to the newest; reuses a current one.

        The previous checkpoint's text plus the messages after it go to the
        provider, so each summary costs only what is new; a long backlog is
        folded in batches of ``HISTORY_LIMIT`` messages until it is caught up.
        """
        while True:
            summary, batch = await self._checkpoint_step(conversation)
            if summary is None or batch < HISTORY_LIMIT:
                return summary

    async def _checkpoint_step(self, conversation: Conversation) -> tuple[Summary | None, int]:
        async with self._uow() as uow:
            previous = await uow.conversations.latest_summary(conversation.id)
            after = previous.last_position if previous else 0
            fresh = await uow.conversations.list_messages(
                conversation.id, after=after, limit=HISTORY_LIMIT
            )
        if not fresh:
            return previous, 0
        prompt = [PromptMessage("system", f"{SUMMARY_INSTRUCTION}, keeping facts and decisions.")]
        if previous is not None:
            prompt.append(PromptMessage("system", f"Earlier summary: {previous.text}"))
        prompt.extend(_summary_line(m) for m in fresh)
        text, served_by = await self._complete(prompt)
        first = previous.first_position if previous else fresh[0].position
        first_id = previous.first_message_id if previous else fresh[0].id
        summary = Summary(
            id=new_id(),
            conversation_id=conversation.id,
            workspace_id=conversation.workspace_id,
            text=text,
            first_position=first,
            last_position=fresh[-1].position,
            first_message_id=first_id,
            last_message_id=fresh[-1].id,
            message_count=fresh[-1].position - first + 1,
            token_count=self._counter.count(text),
            model=served_by,
            create_time=self._clock.now(),
        )
        async with self._uow() as uow:
            if await uow.conversations.get(conversation.workspace_id, conversation.id) is None:
                return None, 0  # deleted meanwhile
            await uow.conversations.add_summary(summary)
            written = SummaryWritten(
                workspace_id=conversation.workspace_id, conversation_id=conversation.id
            )
            await self._events.commit(uow, [written])  # its reactions run after the commit
        return summary, len(fresh)

    async def _complete(self, prompt: Sequence[PromptMessage]) -> tuple[str, str]:
        """The completion's text and ``provider/model`` of whoever wrote it."""
        parts = []
        served_by = f"{self._provider.name}/{self._provider.model}"
        async for chunk in self._provider.stream(prompt, max_tokens=1024):
            parts.append(chunk.text)
            if chunk.provider:
                served_by = f"{chunk.provider}/{chunk.model}"
        return "".join(parts).strip(), served_by

    async def run_summary_job(self, job: Task) -> dict[str, str]:
        """The task runner's handler for a summary job (``TaskKind.SUMMARY``): write
        the conversation's checkpoint. A conversation deleted meanwhile is done
        with nothing to write; an outage raises (the runner retries the job)."""
        async with self._uow() as uow:
            conversation = await uow.conversations.get(job.workspace_id, job.expert_id)
        if conversation is None:
            return {"skipped": "the conversation was deleted"}
        summary = await self.checkpoint(conversation)
        return {"summary": summary.name if summary is not None else ""}


def _summary_line(message: Message) -> PromptMessage:
    """A message as a summary's input: tool steps as plain text (a summary request
    offers no tools, and APIs refuse tool messages without their calls)."""
    if message.tool_result is not None:
        return PromptMessage(
            "assistant", f"(tool {message.tool_result.tool} answered: {message.content})"
        )
    if message.tool_calls:
        called = ", ".join(call.tool for call in message.tool_calls)
        return PromptMessage("assistant", f"{message.content} (called tools: {called})".strip())
    return PromptMessage(message.role.value, message.content)


def prompt_of(window: ContextWindow) -> list[PromptMessage]:
    """The messages sent to the model for ``window``: stored tool steps become an
    assistant message with its ``tool_calls`` and one ``tool`` message per result
    (the tool loop makes the whole prompt well formed before it is sent)."""
    prompt: list[PromptMessage] = []
    for candidate in window.included:
        if candidate.kind is ItemKind.MESSAGE:
            result = candidate.tool_result
            if result is not None:
                prompt.append(tool_message(result))
            elif candidate.text or candidate.tool_calls:
                # An empty assistant message (a step limit, a cancel before any
                # text) tells the model nothing; some APIs refuse it.
                prompt.append(
                    PromptMessage(candidate.role, candidate.text, tool_calls=candidate.tool_calls)
                )
        elif candidate.kind is ItemKind.SUMMARY:
            prompt.append(PromptMessage("system", f"Summary of earlier messages: {candidate.text}"))
        elif candidate.kind is ItemKind.MEMORY:
            prompt.append(PromptMessage("system", f"Relevant memory: {candidate.text}"))
        else:
            prompt.append(PromptMessage("system", candidate.text))
    return prompt
