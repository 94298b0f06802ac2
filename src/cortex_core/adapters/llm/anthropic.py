"""Anthropic's Messages API, through the official ``anthropic`` SDK.

System messages (the system prompt, summaries, memories) go to the ``system``
parameter in prompt order; the rest become alternating user/assistant turns.
The SDK's own retries are off: the fallback chain decides what is retried.

Tools go out as custom tools named by ``ToolSpec.function_name``. A ``tool_use``
content block's ``input_json_delta`` fragments are joined until the stream ends;
the calls are then yielded together, in block order, in one chunk before the usage
and the finish reason. A call in the history is an assistant ``tool_use`` block and
its result a ``tool_result`` block (``is_error``) in the user turn that follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Sequence

import anthropic
import httpx2
from anthropic.types import (
    ContentBlockParam,
    MessageParam,
    RawMessageStreamEvent,
    ToolParam,
    ToolResultBlockParam,
)

from cortex_core.adapters.llm import errors, tool_calls
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage, well_formed
from cortex_core.domain.tools import ToolSpec, function_name

_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "tool_use": FinishReason.TOOL_CALLS,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    # The model declined to go on: what was sent is incomplete.
    "refusal": FinishReason.ERROR,
}
# The Messages API wants the first turn to be the user's; a window that starts
# with an assistant message (older turns pruned) gets this stand-in before it.
_PRUNED_TURN = "(earlier messages omitted)"
# tool_use ids must match this; ids written by another provider are made to fit.
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_-]")


class AnthropicProvider:
    """Streams replies from Anthropic (or a server speaking its Messages API).

    ``stream`` raises :class:`~cortex_core.adapters.llm.errors.ProviderError` (never
    an SDK or HTTP exception). Closing its iterator, or cancelling the task reading
    it, closes the HTTP response at once.
    """

    def __init__(
        self,
        *,
        model: str,
        api_key: str = "",
        name: str = "anthropic",
        base_url: str | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._name = name
        self._model = model
        self._client = anthropic.AsyncAnthropic(
            # A proxy or compatible server may not need a key; the SDK needs one.
            api_key=api_key or "unused",
            base_url=base_url or None,
            max_retries=0,
            timeout=httpx2.Timeout(timeout, connect=connect_timeout),
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def aclose(self) -> None:
        """Close the connection pool (at shutdown)."""
        await self._client.close()

    async def stream(
        self,
        messages: Sequence[PromptMessage],
        *,
        max_tokens: int,
        tools: Sequence[ToolSpec] = (),
    ) -> AsyncGenerator[Chunk, None]:
        offered = tool_calls.offered(tools)
        system, turns = _split(messages, with_tools=bool(offered))
        started = False
        try:
            response = await self._client.messages.create(
                model=self._model,
                max_tokens=max_tokens,
                messages=turns,
                system=system if system else anthropic.omit,
                tools=[_tool(t) for t in offered] if offered else anthropic.omit,
                stream=True,
            )
        except _SDK_ERRORS as exc:
            raise self._error(exc, before_first_token=True) from None
        reading = _Reading()
        try:
            async for event in response:
                text = reading.read(event)
                if text:
                    started = True
                    yield Chunk(text=text)
        except _SDK_ERRORS as exc:
            raise self._error(exc, before_first_token=not started) from None
        finally:
            await response.close()
        if reading.finish is None or not reading.stopped:
            raise errors.truncated(provider=self._name, before_first_token=not started)
        calls = tuple(reading.calls[i].done(offered) for i in sorted(reading.calls))
        if calls:
            yield Chunk(tool_calls=calls)
        if reading.usage is not None:
            yield Chunk(usage=reading.usage)
        yield Chunk(finish=tool_calls.step_finish(reading.finish, calls))

    def _error(self, exc: Exception, *, before_first_token: bool) -> errors.ProviderError:
        # Most specific first: APITimeoutError is an APIConnectionError.
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            return errors.unreachable(
                provider=self._name, before_first_token=before_first_token, timeout=True
            )
        if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
            return errors.unreachable(
                provider=self._name, before_first_token=before_first_token, timeout=False
            )
        error_type = ""
        body = exc.body if isinstance(exc, anthropic.APIError) else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error_type = str(body["error"].get("type") or "")
        if isinstance(exc, anthropic.APIStatusError):
            # An ``event: error`` inside a 200 stream arrives with status 200 and
            # is told apart by its error type.
            return errors.from_status(
                exc.status_code,
                provider=self._name,
                before_first_token=before_first_token,
                headers=exc.response.headers,
                error_type=error_type,
            )
        return errors.from_status(
            200,
            provider=self._name,
            before_first_token=before_first_token,
            error_type=error_type or "api_error",
        )


# The SDK wraps transport errors (also mid-stream) in APIConnectionError; an
# httpx2 error can still escape from closing the response.
_SDK_ERRORS = (anthropic.APIError, httpx2.TransportError)


def _tool(spec: ToolSpec) -> ToolParam:
    tool: ToolParam = {
        "name": spec.function_name,
        "input_schema": tool_calls.plain(spec.input_schema),
    }
    if spec.description:
        tool["description"] = spec.description
    return tool


class _Reading:
    """What the events of one stream said so far."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.usage: Usage | None = None
        self.finish: FinishReason | None = None
        self.stopped = False
        self.calls: dict[int, tool_calls.PartialCall] = {}  # by content block index

    def read(self, event: RawMessageStreamEvent) -> str:
        """Take in one event; return its text, if any."""
        if event.type == "content_block_delta":
            if event.delta.type == "text_delta":
                return event.delta.text
            if event.delta.type == "input_json_delta" and event.index in self.calls:
                self.calls[event.index].fragments.append(event.delta.partial_json)
            return ""
        if event.type == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                # ``input`` is ``{}`` when the arguments stream as deltas.
                initial = json.dumps(block.input) if block.input else ""
                self.calls[event.index] = tool_calls.PartialCall(block.id, block.name, [], initial)
        elif event.type == "message_start":
            u = event.message.usage
            self.prompt_tokens = (
                u.input_tokens
                + (u.cache_creation_input_tokens or 0)
                + (u.cache_read_input_tokens or 0)
            )
            self.completion_tokens = u.output_tokens
        elif event.type == "message_delta":
            d = event.usage
            if d.input_tokens is not None:  # cumulative, when the API sends it
                self.prompt_tokens = (
                    d.input_tokens
                    + (d.cache_creation_input_tokens or 0)
                    + (d.cache_read_input_tokens or 0)
                )
            self.completion_tokens = d.output_tokens
            self.usage = Usage(self.prompt_tokens, self.completion_tokens)
            if event.delta.stop_reason is not None:
                self.finish = _FINISH.get(event.delta.stop_reason, FinishReason.STOP)
        elif event.type == "message_stop":
            self.stopped = True
        return ""


def _split(
    messages: Sequence[PromptMessage], *, with_tools: bool
) -> tuple[str, list[MessageParam]]:
    """The ``system`` text and the turns, consecutive same-role messages merged
    (so consecutive tool results make one user turn, as the API wants)."""
    prompt = well_formed(messages) if with_tools else tool_calls.as_text(messages)
    system: list[str] = []
    turns: list[tuple[str, list[str | ContentBlockParam]]] = []
    for message in prompt:
        if message.role == "system":
            if message.content:
                system.append(message.content)
            continue
        blocks = _blocks(message)
        if not blocks:
            continue  # the API rejects empty text blocks
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))
    if turns and turns[0][0] == "assistant":
        turns.insert(0, ("user", [_PRUNED_TURN]))
    params: list[MessageParam] = []
    for role, parts in turns:
        if all(isinstance(part, str) for part in parts):
            content: str | list[ContentBlockParam] = "\n\n".join(str(part) for part in parts)
        else:
            content = [
                {"type": "text", "text": part} if isinstance(part, str) else part for part in parts
            ]
        if role == "assistant":
            params.append({"role": "assistant", "content": content})
        else:
            params.append({"role": "user", "content": content})
    return "\n\n".join(system), params


def _blocks(message: PromptMessage) -> list[str | ContentBlockParam]:
    """One message's content: text as a string, tool calls and results as blocks."""
    if message.role == "tool":
        result: ToolResultBlockParam = {
            "type": "tool_result",
            "tool_use_id": _id(message.tool_call_id),
        }
        if message.content:
            result["content"] = message.content
        if message.tool_error:
            result["is_error"] = True
        return [result]
    blocks: list[str | ContentBlockParam] = [message.content] if message.content else []
    if message.role == "assistant":
        blocks.extend(
            {
                "type": "tool_use",
                "id": _id(call.id),
                "name": function_name(call.tool),
                "input": tool_calls.plain(call.arguments),
            }
            for call in message.tool_calls
        )
    return blocks


def _id(call_id: str) -> str:
    return _NOT_IN_ID.sub("_", call_id) or "call"


__all__ = ["AnthropicProvider"]
