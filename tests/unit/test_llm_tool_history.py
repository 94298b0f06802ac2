"""Whatever shape a stored history has, the requests the adapters build from it
keep the tool rules of the OpenAI and Anthropic APIs (checked by the same rules
the fake servers enforce), and every call and result survives in some form."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st
from support.fake_llm_servers import anthropic_history_problem, openai_history_problem

from cortex_core.adapters.llm import anthropic as anthropic_adapter
from cortex_core.adapters.llm import openai_compatible as openai_adapter
from cortex_core.domain.llm import PromptMessage
from cortex_core.domain.tools import ToolCall

IDS = st.sampled_from(["a", "b", "c", "call.with/odd chars"])


def _message(role: str, text: str, ids: list[str], error: bool) -> PromptMessage:
    if role == "assistant":
        calls = tuple(ToolCall(i, "weather.get_forecast", {"city": text}) for i in ids)
        return PromptMessage("assistant", text, tool_calls=calls)
    if role == "tool":
        return PromptMessage(
            "tool",
            json.dumps({"text": text}),
            tool_call_id=ids[0] if ids else "",
            tool_name="weather.get_forecast",
            tool_error=error,
        )
    return PromptMessage(role, text)


MESSAGES = st.lists(
    st.builds(
        _message,
        st.sampled_from(["system", "user", "assistant", "tool"]),
        st.sampled_from(["", "hi", "Paris"]),
        st.lists(IDS, max_size=3, unique=True),
        st.booleans(),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_openai_requests_always_pair_calls_with_results(messages: list[PromptMessage]) -> None:
    sent = openai_adapter._messages(messages, with_tools=True)

    body = {"messages": sent, "tools": [{"type": "function", "function": {"parameters": {}}}]}
    assert openai_history_problem(body) is None
    text = json.dumps(sent)
    for message in messages:
        if message.role == "tool":
            assert json.dumps(message.content)[1:-1] in text  # answered or kept as text


@settings(max_examples=300, deadline=None)
@given(MESSAGES)
def test_anthropic_requests_always_pair_tool_use_with_tool_results(
    messages: list[PromptMessage],
) -> None:
    _system, turns = anthropic_adapter._split(messages, with_tools=True)

    body = {"messages": turns, "tools": [{"name": "f", "input_schema": {"type": "object"}}]}
    assert anthropic_history_problem(body) is None
    roles = [t["role"] for t in turns]
    assert all(a != b for a, b in itertools.pairwise(roles))  # merged turns
    assert not roles or roles[0] == "user"


@settings(max_examples=200, deadline=None)
@given(MESSAGES)
def test_without_tools_no_request_carries_a_tool_block(messages: list[PromptMessage]) -> None:
    sent = openai_adapter._messages(messages, with_tools=False)
    _system, turns = anthropic_adapter._split(messages, with_tools=False)

    assert all(m["role"] != "tool" and "tool_calls" not in m for m in sent)
    assert anthropic_history_problem({"messages": turns}) is None
    assert all(isinstance(t["content"], str) for t in turns)
