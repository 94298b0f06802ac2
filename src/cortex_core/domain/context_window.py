"""Choosing what goes into the model's context window, and saying why.

The window is filled in priority order, never past the budget:

1. the conversation's system prompt;
2. the newest message (the one being answered), which is never dropped for
   anything but the system prompt;
3. the newest summary checkpoint, which stands for the older messages;
4. the user's profile;
5. relevant memories, up to a quarter of the budget;
6. the remaining messages, newest first, while they fit. Messages the summary
   covers are *summarized* (its text stands in for them); others that do not
   fit are *pruned*.

A step of a reply that called tools (the assistant message with ``tool_calls``
and the tool messages with their results) is one unit for 2 and 6: it is taken
or left out whole, so the model never sees a result without its call.

Items come back in prompt order (system, summary, profile, memories, messages
oldest first), each with its token count, decision and reason.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from cortex_core.domain.conversations import Message, MessageRole, Summary
from cortex_core.domain.tools import ToolCall, ToolResult

MEMORY_SHARE = 0.25


class ItemKind(enum.Enum):
    SYSTEM_PROMPT = "system_prompt"
    SUMMARY = "summary"
    MEMORY = "memory"
    PROFILE = "profile"
    MESSAGE = "message"


class Decision(enum.Enum):
    INCLUDED = "included"
    PRUNED = "pruned"
    SUMMARIZED = "summarized"


@dataclasses.dataclass(frozen=True, slots=True)
class Candidate:
    kind: ItemKind
    source: str
    text: str
    token_count: int
    role: str = "system"
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant message's calls
    tool_result: ToolResult | None = None  # a tool message's result


@dataclasses.dataclass(frozen=True, slots=True)
class Item:
    candidate: Candidate
    decision: Decision
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class ContextWindow:
    items: tuple[Item, ...]
    token_budget: int

    @property
    def total_token_count(self) -> int:
        return sum(i.candidate.token_count for i in self.items if i.decision is Decision.INCLUDED)

    @property
    def included(self) -> tuple[Candidate, ...]:
        return tuple(i.candidate for i in self.items if i.decision is Decision.INCLUDED)

    @property
    def overflowed(self) -> bool:
        """True when history had to be cut (a summary checkpoint would help)."""
        return any(
            i.decision is Decision.PRUNED and i.candidate.kind is ItemKind.MESSAGE
            for i in self.items
        )


def message_candidate(message: Message) -> Candidate:
    return Candidate(
        ItemKind.MESSAGE,
        message.name,
        message.content,
        message.token_count,
        message.role.value,
        message.tool_calls,
        message.tool_result,
    )


def _steps(messages: Sequence[Message]) -> list[list[int]]:
    """Indices of ``messages`` grouped into units: a tool message joins the
    assistant message with calls before it (and that message's other results)."""
    units: list[list[int]] = []
    for index, message in enumerate(messages):
        joins = (
            message.role is MessageRole.TOOL
            and units
            and messages[units[-1][0]].role is MessageRole.ASSISTANT
            and bool(messages[units[-1][0]].tool_calls)
        )
        if joins:
            units[-1].append(index)
        else:
            units.append([index])
    return units


def assemble(
    *,
    budget: int,
    system_prompt: Candidate | None,
    summary: tuple[Summary, Candidate] | None,
    profile: Candidate | None,
    memories: Sequence[Candidate],
    messages: Sequence[Message],
) -> ContextWindow:
    """Decide every candidate; ``messages`` are in conversation order (oldest first).

    A summary is only used when the raw history does not fit: when it does, the
    summary is pruned as unnecessary and every message goes in verbatim.
    """
    if summary is not None:
        raw = _assemble(
            budget=budget,
            system_prompt=system_prompt,
            summary=None,
            profile=profile,
            memories=memories,
            messages=messages,
        )
        if not raw.overflowed:
            unused = Item(summary[1], Decision.PRUNED, "not needed: the whole history fits")
            position = 1 if system_prompt is not None else 0
            items = (*raw.items[:position], unused, *raw.items[position:])
            return ContextWindow(items, budget)
    return _assemble(
        budget=budget,
        system_prompt=system_prompt,
        summary=summary,
        profile=profile,
        memories=memories,
        messages=messages,
    )


def _assemble(
    *,
    budget: int,
    system_prompt: Candidate | None,
    summary: tuple[Summary, Candidate] | None,
    profile: Candidate | None,
    memories: Sequence[Candidate],
    messages: Sequence[Message],
) -> ContextWindow:
    left = budget
    decided: dict[int, Item] = {}
    order: list[Candidate] = []

    def take(candidate: Candidate, reason: str, *, limit: int | None = None) -> bool:
        nonlocal left
        allowance = left if limit is None else min(left, limit)
        if candidate.token_count <= allowance:
            left -= candidate.token_count
            decided[id(candidate)] = Item(candidate, Decision.INCLUDED, reason)
            return True
        decided[id(candidate)] = Item(
            candidate,
            Decision.PRUNED,
            f"needs {candidate.token_count} tokens, {allowance} left in the budget",
        )
        return False

    if system_prompt is not None:
        order.append(system_prompt)
        take(system_prompt, "the conversation's system prompt always comes first")
    message_candidates = [message_candidate(m) for m in messages]
    units = _steps(messages)
    newest = units.pop() if units else []
    for index in newest:
        take(message_candidates[index], "the newest message is the one being answered")
    covered_up_to = 0
    if summary is not None:
        checkpoint, candidate = summary
        order.append(candidate)
        if take(
            candidate,
            f"newest summary checkpoint, standing for messages {checkpoint.first_position}"
            f"-{checkpoint.last_position}",
        ):
            covered_up_to = checkpoint.last_position
    if profile is not None:
        order.append(profile)
        take(profile, "who the user is")
    memory_limit = int(budget * MEMORY_SHARE)
    for rank, memory in enumerate(memories, start=1):
        order.append(memory)
        spent = sum(
            i.candidate.token_count
            for i in decided.values()
            if i.candidate.kind is ItemKind.MEMORY and i.decision is Decision.INCLUDED
        )
        take(
            memory,
            f"memory ranked {rank} for the latest message",
            limit=max(memory_limit - spent, 0),
        )
    # History stays contiguous: once one message does not fit, every older one
    # is pruned too (a gap in the middle of a dialogue misleads the model).
    stopped = False
    for unit in reversed(units):
        members = [message_candidates[i] for i in unit]
        if messages[unit[0]].position <= covered_up_to:
            for candidate in members:
                decided[id(candidate)] = Item(
                    candidate, Decision.SUMMARIZED, "covered by the included summary checkpoint"
                )
            continue
        cost = sum(c.token_count for c in members)
        if not stopped and cost <= left:
            for candidate in members:
                take(candidate, "recent enough to fit the budget")
            continue
        stopped = True
        for candidate in members:
            decided[id(candidate)] = Item(
                candidate,
                Decision.PRUNED,
                f"older than the messages that fit ({candidate.token_count} tokens, {left} left)"
                if len(members) == 1
                else f"its tool step ({cost} tokens) does not fit ({left} left)",
            )
    order.extend(message_candidates)
    return ContextWindow(tuple(decided[id(c)] for c in order), budget)
