"""Tool calling through the real openai and anthropic SDKs, against servers that
stream tool calls the way the real APIs frame them.

Arguments arrive split across deltas and are assembled into one call per tool use;
names map back to tool ids; the history of calls and results goes out in each API's
shape (the fake servers refuse, as the APIs do, a history that breaks their rules);
malformed output becomes a call with an error instead of a crash; and the fallback
chain never repeats a call that a provider already emitted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from support.fake_llm_servers import (
    FakeAnthropicServer,
    FakeOpenAIServer,
    Script,
    ScriptedCall,
    unused_port,
)

from cortex_core.adapters.llm.anthropic import AnthropicProvider
from cortex_core.adapters.llm.errors import ProviderError, ProviderFailure
from cortex_core.adapters.llm.fallback import Backoff, FallbackProvider
from cortex_core.adapters.llm.openai_compatible import OpenAICompatibleProvider
from cortex_core.domain.conversations import FinishReason
from cortex_core.domain.llm import Chunk, PromptMessage, Usage
from cortex_core.domain.tools import ToolCall, ToolContext, ToolSpec
from cortex_core.ports import LlmProvider
from cortex_core.services.tool_invoker import ToolInvoker

FORECAST_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
FORECAST = ToolSpec(
    id="weather.get_forecast",
    server="weather",
    remote_name="get_forecast",
    display_name="Forecast",
    description="The weather forecast for a city.",
    input_schema=FORECAST_SCHEMA,
)
# A dotted MCP tool name and no description: the name still maps back.
LOOKUP = ToolSpec(
    id="search.web.lookup",
    server="search",
    remote_name="web.lookup",
    display_name="Lookup",
    description="",
    input_schema={"type": "object", "properties": {"q": {"type": "string"}}},
)
TOOLS = [FORECAST, LOOKUP]
ASK = [PromptMessage("system", "You can look things up."), PromptMessage("user", "Paris?")]
FAST = Backoff(initial=0.01, maximum=0.05, jitter=0.0)
PARIS = ScriptedCall("weather__get_forecast", ['{"ci', 'ty": "Par', 'is", "da', 'ys": 3}'])


@dataclasses.dataclass
class Side:
    """One provider and the fake server it talks to."""

    kind: str
    provider: OpenAICompatibleProvider | AnthropicProvider
    server: FakeOpenAIServer | FakeAnthropicServer

    def call_id(self, number: int) -> str:
        """The id the fake server gives its ``number``-th call of a reply."""
        return f"call_fake{number}" if self.kind == "openai" else f"toolu_fake{number}"


@pytest.fixture(params=["openai", "anthropic"])
def side(
    request: pytest.FixtureRequest,
    openai: OpenAICompatibleProvider,
    openai_server: FakeOpenAIServer,
    anthropic: AnthropicProvider,
    anthropic_server: FakeAnthropicServer,
) -> Side:
    if request.param == "openai":
        return Side("openai", openai, openai_server)
    return Side("anthropic", anthropic, anthropic_server)


async def collect(
    provider: LlmProvider,
    messages: list[PromptMessage] = ASK,
    tools: list[ToolSpec] = TOOLS,
) -> list[Chunk]:
    return [c async for c in provider.stream(messages, max_tokens=200, tools=tools)]


def calls_in(chunks: list[Chunk]) -> list[ToolCall]:
    return [call for chunk in chunks for call in chunk.tool_calls]


def sent_messages(side: Side) -> list[dict[str, Any]]:
    request = side.server.requests[-1]
    assert request.refused is None, request.refused
    messages: list[dict[str, Any]] = request.body["messages"]
    return messages


# --- streamed calls -------------------------------------------------------------------


async def test_arguments_split_across_deltas_are_assembled_into_one_call_after_the_text(
    side: Side,
) -> None:
    side.server.queue(Script(tokens=("Let me", " check."), tool_calls=[PARIS]))

    chunks = await collect(side.provider)

    assert [c.text for c in chunks[:2]] == ["Let me", " check."]
    assert chunks[2] == Chunk(
        tool_calls=(
            ToolCall(side.call_id(0), "weather.get_forecast", {"city": "Paris", "days": 3}),
        )
    )
    assert chunks[3] == Chunk(usage=Usage(11, 3))
    assert chunks[4] == Chunk(finish=FinishReason.TOOL_CALLS)
    assert len(chunks) == 5


async def test_the_tools_are_sent_under_their_function_names(side: Side) -> None:
    await collect(side.provider)

    tools = side.server.requests[-1].body["tools"]
    if side.kind == "openai":
        assert tools == [
            {
                "type": "function",
                "function": {
                    "name": "weather__get_forecast",
                    "description": "The weather forecast for a city.",
                    "parameters": FORECAST_SCHEMA,
                },
            },
            {
                "type": "function",
                "function": {"name": "search__web__lookup", "parameters": LOOKUP.input_schema},
            },
        ]
    else:
        assert tools == [
            {
                "name": "weather__get_forecast",
                "description": "The weather forecast for a city.",
                "input_schema": FORECAST_SCHEMA,
            },
            {"name": "search__web__lookup", "input_schema": LOOKUP.input_schema},
        ]


async def test_no_tools_means_no_tools_parameter(side: Side) -> None:
    await collect(side.provider, tools=[])

    assert "tools" not in side.server.requests[-1].body


async def test_two_calls_in_one_step_come_together_in_the_order_the_model_made_them(
    side: Side,
) -> None:
    rome = ScriptedCall("weather__get_forecast", ['{"city"', ': "Rome"}'])
    look = ScriptedCall("search__web__lookup", ["{", '"q": "r', 'ain"', "}"])
    side.server.queue(Script(tokens=(), tool_calls=[rome, look]))

    chunks = await collect(side.provider)

    assert [c.text for c in chunks if c.text] == []
    assert calls_in(chunks) == [
        ToolCall(side.call_id(0), "weather.get_forecast", {"city": "Rome"}),
        ToolCall(side.call_id(1), "search.web.lookup", {"q": "rain"}),
    ]
    assert sum(1 for c in chunks if c.tool_calls) == 1  # one chunk for the whole step
    assert chunks[-1].finish is FinishReason.TOOL_CALLS


async def test_a_call_without_arguments_gets_an_empty_object(side: Side) -> None:
    side.server.queue(Script(tokens=(), tool_calls=[ScriptedCall("search__web__lookup", [])]))

    (call,) = calls_in(await collect(side.provider))

    assert call.tool == "search.web.lookup"
    assert dict(call.arguments) == {}
    assert call.error is None


async def test_an_endpoint_that_says_stop_after_calling_tools_still_ends_the_step_with_tool_calls(
    openai: OpenAICompatibleProvider, openai_server: FakeOpenAIServer
) -> None:
    # vLLM and Ollama have answered tool calls with finish_reason "stop".
    openai_server.queue(Script(tokens=(), tool_calls=[PARIS], finish="stop"))

    chunks = await collect(openai)

    assert len(calls_in(chunks)) == 1
    assert chunks[-1].finish is FinishReason.TOOL_CALLS


async def test_a_reply_without_calls_still_finishes_with_stop(side: Side) -> None:
    chunks = await collect(side.provider)

    assert calls_in(chunks) == []
    assert chunks[-1].finish is FinishReason.STOP


# --- malformed output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fragments", "says"),
    [
        (['{"city": "Par'], "not valid JSON"),  # cut off (e.g. by the token limit)
        (["[1, ", "2]"], "must be a JSON object"),
        (['{"city": Na', "N}"], "not valid JSON"),
        (['{"days": 1e999}'], "out of range"),
    ],
)
async def test_arguments_that_are_not_a_json_object_give_a_call_with_an_error(
    side: Side, fragments: list[str], says: str
) -> None:
    side.server.queue(
        Script(tokens=(), tool_calls=[ScriptedCall("weather__get_forecast", fragments)])
    )

    chunks = await collect(side.provider)

    (call,) = calls_in(chunks)
    assert call.id == side.call_id(0)
    assert call.tool == "weather.get_forecast"
    assert dict(call.arguments) == {}
    assert call.error is not None
    assert call.error.reason == "INVALID_TOOL_INPUT"
    assert says in call.error.message
    assert chunks[-1].finish is FinishReason.TOOL_CALLS


async def test_a_name_the_model_invents_gives_a_call_that_can_never_reach_a_tool(
    side: Side,
) -> None:
    invented = ScriptedCall("cortex.delete_everything", ['{"sure": true}'])
    side.server.queue(Script(tokens=(), tool_calls=[invented, PARIS]))

    first, second = calls_in(await collect(side.provider))

    assert first.error is not None
    assert first.error.reason == "TOOL_NOT_FOUND"
    assert "cortex.delete_everything" in first.error.message
    assert "." not in first.tool  # no tool id has this name: nothing can run it
    assert second.error is None  # the good call of the same step is untouched
    assert second.tool == "weather.get_forecast"


async def test_a_model_that_writes_the_tool_id_instead_of_the_function_name_is_understood(
    side: Side,
) -> None:
    side.server.queue(Script(tokens=(), tool_calls=[ScriptedCall("weather.get_forecast")]))

    (call,) = calls_in(await collect(side.provider))

    assert call.tool == "weather.get_forecast"
    assert call.error is None


# --- the history of calls and results ---------------------------------------------------

HISTORY = [
    PromptMessage("system", "You can look things up."),
    PromptMessage("user", "Weather in Paris and Rome?"),
    PromptMessage(
        "assistant",
        "Checking both.",
        tool_calls=(
            ToolCall("call_1", "weather.get_forecast", {"city": "Paris"}),
            ToolCall("call_2", "weather.get_forecast", {"city": "Rome"}),
        ),
    ),
    PromptMessage("tool", '{"temp":21}', tool_call_id="call_1", tool_name="weather.get_forecast"),
    PromptMessage(
        "tool",
        '{"error":{"reason":"TOOL_TIMEOUT","message":"too slow"}}',
        tool_call_id="call_2",
        tool_name="weather.get_forecast",
        tool_error=True,
    ),
]


async def test_openai_gets_the_calls_on_the_assistant_message_and_each_result_as_a_tool_message(
    openai: OpenAICompatibleProvider, openai_server: FakeOpenAIServer
) -> None:
    chunks = await collect(openai, HISTORY)

    assert chunks[-1].finish is FinishReason.STOP
    assert openai_server.requests[-1].refused is None
    assert openai_server.requests[-1].body["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather__get_forecast", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "weather__get_forecast", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":21}'},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": '{"error":{"reason":"TOOL_TIMEOUT","message":"too slow"}}',
        },
    ]


async def test_anthropic_gets_tool_use_blocks_and_the_results_merged_into_one_user_turn(
    anthropic: AnthropicProvider, anthropic_server: FakeAnthropicServer
) -> None:
    followed = [*HISTORY, PromptMessage("user", "And tomorrow?")]

    chunks = await collect(anthropic, followed)

    assert chunks[-1].finish is FinishReason.STOP
    assert anthropic_server.requests[-1].refused is None
    assert anthropic_server.requests[-1].body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "weather__get_forecast",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "weather__get_forecast",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": '{"temp":21}'},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": '{"error":{"reason":"TOOL_TIMEOUT","message":"too slow"}}',
                    "is_error": True,
                },
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]


async def test_streamed_calls_and_their_results_go_back_to_the_model_in_the_next_step(
    side: Side,
) -> None:
    rome = ScriptedCall("weather__get_forecast", ['{"city": "Ro', 'me"}'])
    side.server.queue(Script(tokens=("On it.",), tool_calls=[PARIS, rome]))
    first = await collect(side.provider)
    calls = tuple(calls_in(first))
    results = [
        PromptMessage("tool", json.dumps({"n": n}), tool_call_id=c.id, tool_name=c.tool)
        for n, c in enumerate(calls)
    ]
    step = [*ASK, PromptMessage("assistant", "On it.", tool_calls=calls), *results]

    second = await collect(side.provider, step)

    assert "".join(c.text for c in second) == "Hello, world"
    messages = sent_messages(side)
    if side.kind == "openai":
        sent_ids = [c["id"] for c in messages[-3]["tool_calls"]]
        answered = [m["tool_call_id"] for m in messages[-2:]]
        sent_args = [json.loads(c["function"]["arguments"]) for c in messages[-3]["tool_calls"]]
    else:
        blocks = messages[-2]["content"]
        sent_ids = [b["id"] for b in blocks if b["type"] == "tool_use"]
        answered = [b["tool_use_id"] for b in messages[-1]["content"]]
        sent_args = [b["input"] for b in blocks if b["type"] == "tool_use"]
    assert sent_ids == answered == [side.call_id(0), side.call_id(1)]
    assert sent_args == [{"city": "Paris", "days": 3}, {"city": "Rome"}]


async def test_a_pruned_call_or_a_missing_result_still_makes_a_history_the_api_accepts(
    side: Side,
) -> None:
    broken = [
        PromptMessage("system", "Be brief."),
        # The window was cut inside a step: this result's call is gone.
        PromptMessage("tool", '{"temp":19}', tool_call_id="gone", tool_name="weather.get_forecast"),
        PromptMessage("user", "And Rome?"),
        # The process died before this call's result was stored.
        PromptMessage(
            "assistant", "", tool_calls=(ToolCall("lost", "weather.get_forecast", {"city": "R"}),)
        ),
        PromptMessage("user", "Hello?"),
    ]

    chunks = await collect(side.provider, broken)

    assert chunks[-1].finish is FinishReason.STOP
    text = json.dumps(sent_messages(side))
    assert '{\\"temp\\":19}' in text  # kept as text for the model, not as a dangling result
    assert "no result was recorded" in text  # the lost call is answered


async def test_without_tools_the_history_of_calls_is_sent_as_plain_text(side: Side) -> None:
    chunks = await collect(side.provider, HISTORY, tools=[])

    assert chunks[-1].finish is FinishReason.STOP
    messages = sent_messages(side)
    assert all(m["role"] in ("system", "user", "assistant") for m in messages)
    assert all(isinstance(m["content"], str) for m in messages)
    text = "\n".join(m["content"] for m in messages)
    assert 'called weather.get_forecast with {"city":"Paris"}' in text
    assert "[error from weather.get_forecast]" in text


# --- failures: the chain, timeouts, connections -----------------------------------------


def chain(*providers: LlmProvider) -> FallbackProvider:
    return FallbackProvider(providers, retries=1, backoff=FAST)


async def test_a_stream_cut_inside_a_call_before_any_text_is_retried_and_the_call_comes_once(
    side: Side,
) -> None:
    # Cut after the call's start and one fragment: nothing reached the caller yet.
    side.server.queue(Script(tokens=(), tool_calls=[PARIS], cut_after=2))
    side.server.default = Script(tokens=(), tool_calls=[PARIS])

    chunks = await collect(chain(side.provider))

    assert len(side.server.requests) == 2
    assert calls_in(chunks) == [
        ToolCall(side.call_id(0), "weather.get_forecast", {"city": "Paris", "days": 3})
    ]
    assert {(c.provider, c.model) for c in chunks} == {(side.kind, side.provider.model)}
    assert chunks[-1].finish is FinishReason.TOOL_CALLS


async def test_a_stream_cut_inside_a_call_after_text_fails_the_reply_without_the_half_call(
    side: Side, openai: OpenAICompatibleProvider, anthropic: AnthropicProvider
) -> None:
    other = anthropic if side.kind == "openai" else openai
    side.server.queue(Script(tokens=("Checking",), tool_calls=[PARIS], cut_after=3))
    seen: list[Chunk] = []

    with pytest.raises(ProviderFailure) as caught:
        async for chunk in chain(side.provider, other).stream(ASK, max_tokens=50, tools=TOOLS):
            seen.append(chunk)

    assert [c.text for c in seen] == ["Checking"]
    assert calls_in(seen) == []  # a half-streamed call is never handed out
    assert caught.value.reason == "PROVIDER_FAILED"
    assert caught.value.errors[-1].reason == "PROVIDER_UNREACHABLE"
    assert len(side.server.requests) == 1  # not retried: the text was shown


async def test_a_step_of_only_tool_calls_through_the_chain_names_who_served_it(
    side: Side,
) -> None:
    side.server.queue(Script(tokens=(), tool_calls=[PARIS]))

    chunks = await collect(chain(side.provider))

    (with_calls,) = [c for c in chunks if c.tool_calls]
    assert with_calls.provider == side.kind
    assert with_calls.model == side.provider.model
    assert chunks[-1].finish is FinishReason.TOOL_CALLS


async def test_a_provider_that_stalls_inside_a_call_times_out(side: Side) -> None:
    provider: OpenAICompatibleProvider | AnthropicProvider
    if side.kind == "openai":
        provider = OpenAICompatibleProvider(
            model="m", base_url=side.server.base_url, api_key="k", timeout=0.3
        )
    else:
        provider = AnthropicProvider(
            model="m", base_url=side.server.base_url, api_key="k", timeout=0.3
        )
    side.server.queue(Script(tokens=(), tool_calls=[PARIS], hang_after=2))

    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    await provider.aclose()

    assert type(caught.value) is ProviderError
    assert caught.value.reason == "PROVIDER_TIMEOUT"
    assert caught.value.before_first_token


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_refused_connection_with_tools_is_unreachable(kind: str) -> None:
    base = f"http://127.0.0.1:{unused_port()}"
    provider: OpenAICompatibleProvider | AnthropicProvider
    if kind == "openai":
        provider = OpenAICompatibleProvider(model="m", base_url=f"{base}/v1", api_key="k")
    else:
        provider = AnthropicProvider(model="m", base_url=base, api_key="k")

    with pytest.raises(ProviderError) as caught:
        await collect(provider)
    await provider.aclose()

    assert caught.value.reason == "PROVIDER_UNREACHABLE"
    assert caught.value.retryable


# --- what the tool loop does with a call it cannot run ------------------------------------


class CountingSource:
    """A tool server that counts the calls it gets (``search.web.lookup``)."""

    server = "search"

    def __init__(self) -> None:
        self.called = 0

    def tools(self) -> Sequence[ToolSpec]:
        return [LOOKUP]

    async def call(
        self,
        tool: ToolSpec,
        arguments: Mapping[str, Any],
        context: ToolContext,
        *,
        time_limit: float,
    ) -> Mapping[str, Any]:
        self.called += 1
        return {"hits": []}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_call_with_bad_arguments_is_answered_with_its_error_and_never_run(
    side: Side,
) -> None:
    # LOOKUP's schema requires nothing: run with {} it would pass validation.
    bad = ScriptedCall("search__web__lookup", ['{"q": "rain'])
    side.server.queue(Script(tokens=(), tool_calls=[bad, ScriptedCall("search__web__lookup")]))
    source = CountingSource()
    invoker = ToolInvoker([source])
    calls = calls_in(await collect(side.provider))

    results = [await invoker.run(c, ToolContext("w", "u")) for c in calls]

    assert results[0].error is not None
    assert results[0].error.reason == "INVALID_TOOL_INPUT"
    assert results[1].ok
    assert source.called == 1  # only the well-formed call ran
