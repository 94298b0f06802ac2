"""The local development provider: a deterministic stand-in for a real model.

It is the embedded default so that ``make run`` works offline, and it is named
``local-dev`` everywhere it shows (provider name, model ``cortex-local-dev``,
and the text of every reply) so nobody mistakes it for a model. It answers
by describing what it received, word by word; asked for a summary (the system
message starts with :data:`SUMMARY_INSTRUCTION`) it writes an extractive one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from cortex_core.adapters.token_counter import EstimatedTokenCounter
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage
from cortex_core.domain.tools import ToolSpec

SUMMARY_INSTRUCTION = "Summarize the conversation below"
_WORDS_PER_MESSAGE_IN_SUMMARY = 8
_SUMMARY_WORDS = 80


class LocalDevelopmentProvider:
    """Streams a canned, input-dependent reply; ``delay`` paces the words."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self._delay = delay
        self._counter = EstimatedTokenCounter()

    @property
    def name(self) -> str:
        return "local-dev"

    @property
    def model(self) -> str:
        return "cortex-local-dev"

    async def stream(
        self,
        messages: Sequence[PromptMessage],
        *,
        max_tokens: int,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[Chunk, None]:
        words = self._reply(messages).split(" ")
        prompt_tokens = sum(self._counter.count(m.content) for m in messages)
        sent = 0
        finish = FinishReason.STOP
        for index, word in enumerate(words):
            if sent >= max_tokens:
                finish = FinishReason.LENGTH
                break
            await asyncio.sleep(self._delay)
            yield Chunk(text=word if index == 0 else " " + word)
            sent += 1
        yield Chunk(usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=sent))
        yield Chunk(finish=finish)

    def _reply(self, messages: Sequence[PromptMessage]) -> str:
        if (
            messages
            and messages[0].role == "system"
            and messages[0].content.startswith(SUMMARY_INSTRUCTION)
        ):
            parts = []
            for message in messages[1:]:
                head = " ".join(message.content.split()[:_WORDS_PER_MESSAGE_IN_SUMMARY])
                parts.append(f"{message.role}: {head}")
            words = " | ".join(parts).split()
            # Newest words win: the earlier summary comes first and is cut first.
            return "[local-dev summary] " + " ".join(words[-_SUMMARY_WORDS:])
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        quoted = " ".join(last.split()[:40])
        return (
            f"[local-dev reply] You said: {quoted} "
            f"(this is the local development provider; {len(messages)} prompt items)"
        )
