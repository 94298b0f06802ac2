"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

OpenAI itself, Azure OpenAI (its ``/openai/v1/`` base URL), vLLM, Ollama and the
llama.cpp server all speak this protocol; only the base URL, key and model differ.
The SDK's own retries are off: :class:`~cortex_core.adapters.llm.fallback.FallbackProvider`
decides what is retried, where and when.

Tools go out as ``function`` tools named by ``ToolSpec.function_name``; the streamed
``delta.tool_calls`` fragments are joined by their ``index`` (id and name come in a
call's first fragment) and the calls are yielded together, in index order, in one
chunk once the stream has finished, before the usage and the finish reason.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Literal

import httpx2
import openai
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.shared_params import FunctionDefinition

from cortex_core.adapters.llm import errors, tool_calls
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage, well_formed
from cortex_core.domain.tools import ToolSpec, function_name

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    # The provider withheld the rest of the reply: what was sent is incomplete.
    "content_filter": FinishReason.ERROR,
}

TokenLimitField = Literal["max_tokens", "max_completion_tokens"]


class OpenAICompatibleProvider:
    """Streams chat completions from one OpenAI-compatible endpoint.

    ``stream`` raises :class:`~cortex_core.adapters.llm.errors.ProviderError` (never
    an SDK or HTTP exception). Closing its iterator, or cancelling the task reading
    it, closes the HTTP response at once.
    """

    def __init__(
        self,
        *,
        model: str,
        name: str = "openai",
        base_url: str | None = None,
        api_key: str = "",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        token_limit_field: TokenLimitField = "max_tokens",
    ) -> None:
        self._name = name
        self._model = model
        self._token_limit_field = token_limit_field
        self._client = openai.AsyncOpenAI(
            # Local servers (vLLM, Ollama, llama.cpp) accept any key; the SDK needs one.
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
        started = False
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=_messages(messages, with_tools=bool(offered)),
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=max_tokens if self._token_limit_field == "max_tokens" else openai.omit,
                max_completion_tokens=(
                    max_tokens
                    if self._token_limit_field == "max_completion_tokens"
                    else openai.omit
                ),
                tools=[_tool(t) for t in offered] if offered else openai.omit,
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
        if reading.finish is None:
            raise errors.truncated(provider=self._name, before_first_token=not started)
        calls = tuple(reading.calls[i].done(offered) for i in sorted(reading.calls))
        if calls:
            yield Chunk(tool_calls=calls)
        if reading.usage is not None:
            yield Chunk(usage=reading.usage)
        yield Chunk(finish=tool_calls.step_finish(reading.finish, calls))

    def _error(self, exc: Exception, *, before_first_token: bool) -> errors.ProviderError:
        # Most specific first: APITimeoutError is an APIConnectionError.
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return errors.unreachable(
                provider=self._name, before_first_token=before_first_token, timeout=True
            )
        if isinstance(exc, openai.APIConnectionError | httpx2.TransportError):
            return errors.unreachable(
                provider=self._name, before_first_token=before_first_token, timeout=False
            )
        if isinstance(exc, openai.APIStatusError):
            return errors.from_status(
                exc.status_code,
                provider=self._name,
                before_first_token=before_first_token,
                headers=exc.response.headers,
            )
        # An error event inside a 200 stream (``data: {"error": ...}``).
        error_type = ""
        if isinstance(exc, openai.APIError) and isinstance(exc.body, dict):
            error_type = str(exc.body.get("type") or exc.body.get("code") or "")
        return errors.from_status(
            200,
            provider=self._name,
            before_first_token=before_first_token,
            error_type=error_type or "server_error",
        )


# The SDK wraps transport errors (also mid-stream) in APIConnectionError; an
# httpx2 error can still escape from closing the response.
_SDK_ERRORS = (openai.APIError, httpx2.TransportError)


def _tool(spec: ToolSpec) -> ChatCompletionFunctionToolParam:
    function: FunctionDefinition = {
        "name": spec.function_name,
        "parameters": tool_calls.plain(spec.input_schema),
    }
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


def _messages(
    messages: Sequence[PromptMessage], *, with_tools: bool
) -> list[ChatCompletionMessageParam]:
    prompt = well_formed(messages) if with_tools else tool_calls.as_text(messages)
    return [_message(m) for m in prompt]


def _message(message: PromptMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        calls: list[ChatCompletionMessageFunctionToolCallParam] = [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": function_name(call.tool),
                    "arguments": tool_calls.arguments_json(call),
                },
            }
            for call in message.tool_calls
        ]
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    if message.role == "tool":
        # The API has no error flag on a result: its JSON says so ({"error": ...}).
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    return {"role": "user", "content": message.content}


class _Reading:
    """What the chunks of one stream said so far (choice 0 only: Cortex asks for one)."""

    def __init__(self) -> None:
        self.finish: FinishReason | None = None
        self.usage: Usage | None = None
        self.calls: dict[int, tool_calls.PartialCall] = {}

    def read(self, event: ChatCompletionChunk) -> str:
        """Take in one chunk; return its text, if any."""
        text = ""
        for choice in event.choices:
            if choice.index != 0:
                continue
            text = choice.delta.content or ""
            for fragment in choice.delta.tool_calls or ():
                # Servers that send whole calls may leave out the index.
                index = fragment.index if fragment.index is not None else len(self.calls)
                call = self.calls.setdefault(index, tool_calls.PartialCall())
                call.id = call.id or fragment.id or ""
                function = fragment.function
                if function is not None:
                    # The name comes once; a server that repeats it is not doubled.
                    if function.name and function.name != call.name:
                        call.name += function.name
                    if function.arguments:
                        call.fragments.append(function.arguments)
            if choice.finish_reason is not None:
                self.finish = _FINISH.get(choice.finish_reason, FinishReason.STOP)
        if event.usage is not None:
            self.usage = Usage(
                prompt_tokens=event.usage.prompt_tokens,
                completion_tokens=event.usage.completion_tokens,
            )
        return text


__all__ = ["OpenAICompatibleProvider", "TokenLimitField"]
