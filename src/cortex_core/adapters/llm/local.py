"""The local development provider: a deterministic stand-in for a real model.

It is the embedded default so that ``make run`` works offline, and it is named
``local-dev`` everywhere it shows (provider name, model ``cortex-local-dev``,
and the text of every reply) so nobody mistakes it for a model. It answers
by describing what it received, word by word; asked for a summary (the system
message starts with :data:`SUMMARY_INSTRUCTION`) it writes an extractive one.

Tool mode (only when ``tools`` are offered), so the whole tool loop runs with no
model. The last user message may hold directives, one per line:

* ``/call <tool-id> {json arguments}``: the next turn calls that tool (several
  lines: several calls in one turn, which run in parallel); once the results
  are in, it answers with a text that quotes every result it got.
* ``/loop <tool-id> {json arguments}``: like ``/call``, but every turn calls
  again, so the reply runs until its step limit.

The arguments default to ``{}``. The tool id is not checked against the offered
tools, so a directive can show what happens to a call the conversation does not
allow. Call ids are derived from the prompt, so a replay of a prompt gives the
same ids.

Task mode (an expert's attempt: the system message ends with a line
``Attempt: N`` and the user message is the task input as JSON; directives are
read from every string value of that object, e.g. the ``text`` of the default
experts' input):

* ``/output {json}``: answer exactly that JSON text (for an expert with an
  output schema; ``/output`` with text that is not JSON answers the text as is).
* ``/fail N``: attempts 1 … N fail before the first word with a retryable
  ``Unavailable`` (reason PROVIDER_UNAVAILABLE); attempt N+1 answers.
* ``/ask {json schema}``: the expert asks for input: it answers
  ``{"input_request": {"message": ..., "answer_schema": <schema>}}``; once the
  answer is in the prompt (a user message ``Answer: …``) it answers with a text
  quoting it instead.
* ``/call`` and ``/loop`` as above.

Without a directive a task's answer is ``[local-dev]`` and the input's text.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncGenerator, Sequence

from cortex_core import errors
from cortex_core.adapters.token_counter import EstimatedTokenCounter
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage
from cortex_core.domain.tools import ToolCall, ToolSpec

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
        calls = _directed_calls(messages) if tools else ()
        text = self._reply(messages) if not calls else _calling_text(calls)
        if tools and not calls and messages and messages[-1].role == "tool":
            text = _results_text(messages)
        task_text = _task_reply(messages) if not calls else None
        if task_text is not None:
            text = task_text
        words = text.split(" ")
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
        if calls and finish is FinishReason.STOP:
            yield Chunk(tool_calls=calls)
            finish = FinishReason.TOOL_CALLS
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


def _attempt(messages: Sequence[PromptMessage]) -> int:
    """The ``Attempt: N`` of a task's system message; 0 outside a task."""
    for message in messages:
        if message.role == "system":
            for line in message.content.splitlines():
                head, _, number = line.partition(":")
                if head.strip() == "Attempt" and number.strip().isdigit():
                    return int(number)
    return 0


def _directive_lines(content: str) -> list[str]:
    """The lines of a user message, or of every string value of the JSON object it is."""
    try:
        value = json.loads(content)
    except ValueError:
        return content.splitlines()
    if not isinstance(value, dict):
        return content.splitlines()
    return [line for v in value.values() if isinstance(v, str) for line in v.splitlines()]


def _task_reply(messages: Sequence[PromptMessage]) -> str | None:
    """A task attempt's directed answer (``/fail`` raises), or None."""
    attempt = _attempt(messages)
    if not attempt:
        return None
    first_user = next((m for m in messages if m.role == "user"), None)
    if first_user is None:
        return None
    answered = [m.content for m in messages if m.role == "user" and m.content.startswith("Answer:")]
    for line in _directive_lines(first_user.content):
        verb, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if verb == "/fail" and rest.isdigit() and attempt <= int(rest):
            raise errors.Unavailable(
                f"local-dev: attempt {attempt} fails as directed", reason="PROVIDER_UNAVAILABLE"
            )
        if verb == "/output":
            return rest
        if verb == "/ask":
            if answered:
                return f"[local-dev reply] Thanks. {answered[-1]}"
            try:
                schema = json.loads(rest) if rest else {"type": "object"}
            except ValueError:
                schema = {"type": "object"}
            request = {"message": "local-dev asks for input", "answer_schema": schema}
            return json.dumps({"input_request": request}, separators=(",", ":"))
    if any(m.role == "tool" for m in messages):
        return None  # the tool-results text
    return "[local-dev] " + " ".join(_directive_lines(first_user.content)).strip()


def _directed_calls(messages: Sequence[PromptMessage]) -> tuple[ToolCall, ...]:
    """The calls the last user message directs for this turn: its ``/call`` lines
    while no result came back since, its ``/loop`` lines on every turn."""
    last_user = next(
        (i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), -1
    )
    if last_user < 0:
        return ()
    answered = any(m.role == "tool" for m in messages[last_user + 1 :])
    seed = hashlib.sha256(
        "\x1f".join(f"{m.role}:{m.content}" for m in messages).encode()
    ).hexdigest()[:16]
    calls: list[ToolCall] = []
    for line in _directive_lines(messages[last_user].content):
        verb, _, rest = line.strip().partition(" ")
        if verb not in ("/call", "/loop") or (verb == "/call" and answered):
            continue
        tool_id, _, raw = rest.strip().partition(" ")
        if not tool_id:
            continue
        try:
            arguments = json.loads(raw) if raw.strip() else {}
        except ValueError:
            arguments = {"text": raw.strip()}
        if not isinstance(arguments, dict):
            arguments = {"value": arguments}
        calls.append(ToolCall(id=f"call_{seed}_{len(calls)}", tool=tool_id, arguments=arguments))
    return tuple(calls)


def _calling_text(calls: Sequence[ToolCall]) -> str:
    names = ", ".join(call.tool for call in calls)
    return f"[local-dev] calling {names}"


def _results_text(messages: Sequence[PromptMessage]) -> str:
    """A reply that quotes the results after the last assistant turn."""
    results = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(f"{message.tool_name} -> {message.content}")
    quoted = "; ".join(reversed(results))
    return f"[local-dev reply] Tool results: {quoted}"
