"""Any OpenAI-compatible chat-completions endpoint, through the official ``openai`` SDK.

OpenAI itself, Azure OpenAI (its ``/openai/v1/`` base URL), vLLM, Ollama and the
llama.cpp server all speak this protocol; only the base URL, key and model differ.
The SDK's own retries are off: :class:`~cortex_core.adapters.llm.fallback.FallbackProvider`
decides what is retried, where and when.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Literal

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from cortex_core.adapters.llm import errors
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage
from cortex_core.domain.tools import ToolSpec

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.STOP,
    "function_call": FinishReason.STOP,
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
        started = False
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[_message(m) for m in messages],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=max_tokens if self._token_limit_field == "max_tokens" else openai.omit,
                max_completion_tokens=(
                    max_tokens
                    if self._token_limit_field == "max_completion_tokens"
                    else openai.omit
                ),
            )
        except _SDK_ERRORS as exc:
            raise self._error(exc, before_first_token=True) from None
        usage: Usage | None = None
        finish: FinishReason | None = None
        try:
            async for event in response:
                text, event_finish, event_usage = _read(event)
                if text:
                    started = True
                    yield Chunk(text=text)
                finish = event_finish or finish
                usage = event_usage or usage
        except _SDK_ERRORS as exc:
            raise self._error(exc, before_first_token=not started) from None
        finally:
            await response.close()
        if finish is None:
            raise errors.truncated(provider=self._name, before_first_token=not started)
        if usage is not None:
            yield Chunk(usage=usage)
        yield Chunk(finish=finish)

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


# httpx errors escape the SDK while the body streams; APIError covers the rest.
_SDK_ERRORS = (openai.APIError, httpx2.TransportError)


def _message(message: PromptMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    # "tool" results would need a tool_call_id; Cortex sends them as user text.
    return {"role": "user", "content": message.content}


def _read(event: ChatCompletionChunk) -> tuple[str, FinishReason | None, Usage | None]:
    text = ""
    finish: FinishReason | None = None
    for choice in event.choices:
        if choice.index != 0:
            continue
        text = choice.delta.content or ""
        if choice.finish_reason is not None:
            finish = _FINISH.get(choice.finish_reason, FinishReason.STOP)
    usage = None
    if event.usage is not None:
        usage = Usage(
            prompt_tokens=event.usage.prompt_tokens,
            completion_tokens=event.usage.completion_tokens,
        )
    return text, finish, usage


__all__ = ["OpenAICompatibleProvider", "TokenLimitField"]
