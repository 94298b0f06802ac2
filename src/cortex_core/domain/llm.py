"""What the use cases exchange with a language-model provider."""

from __future__ import annotations

import dataclasses

from cortex_core.domain.conversations import FinishReason


@dataclasses.dataclass(frozen=True, slots=True)
class PromptMessage:
    role: str  # "system", "user", "assistant" or "tool"
    content: str


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclasses.dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a streamed completion: text, the provider's usage report, or
    the finish reason (the last chunk).

    ``provider`` and ``model`` name who produced it, when a chain of providers
    chose one (empty: the provider that was called)."""

    text: str = ""
    usage: Usage | None = None
    finish: FinishReason | None = None
    provider: str = ""
    model: str = ""
