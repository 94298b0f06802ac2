"""Tool steps in the context window and in the prompt: a call and its results are
kept or dropped together, so the model never sees one without the other."""

from __future__ import annotations

from datetime import UTC, datetime

from cortex_core.domain.context_window import Decision, assemble
from cortex_core.domain.conversations import FinishReason, Message, MessageRole
from cortex_core.domain.llm import PromptMessage, well_formed
from cortex_core.domain.tools import ToolCall, ToolResult

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _message(position: int, role: MessageRole, tokens: int, **extra: object) -> Message:
    return Message(
        id=f"m{position}",
        conversation_id="c",
        workspace_id="w",
        position=position,
        role=role,
        content=f"message {position}",
        token_count=tokens,
        create_time=NOW,
        **extra,  # type: ignore[arg-type]
    )


def _history() -> list[Message]:
    calls = (ToolCall("a", "x.echo"), ToolCall("b", "x.echo"))
    return [
        _message(1, MessageRole.USER, 10),
        _message(
            2, MessageRole.ASSISTANT, 40, tool_calls=calls, finish_reason=FinishReason.TOOL_CALLS
        ),
        _message(3, MessageRole.TOOL, 10, tool_result=ToolResult("a", "x.echo", output={})),
        _message(4, MessageRole.TOOL, 10, tool_result=ToolResult("b", "x.echo", output={})),
        _message(5, MessageRole.ASSISTANT, 10),
        _message(6, MessageRole.USER, 10),
    ]


def _decisions(budget: int) -> list[Decision]:
    window = assemble(
        budget=budget,
        system_prompt=None,
        summary=None,
        profile=None,
        memories=(),
        messages=_history(),
    )
    return [item.decision for item in window.items]


def test_a_tool_step_that_does_not_fit_is_left_out_whole() -> None:
    # 20 for the two newest, 20 more for the results, but not 60 for the whole step.
    assert _decisions(50) == [Decision.PRUNED] * 4 + [Decision.INCLUDED] * 2


def test_a_tool_step_that_fits_goes_in_whole() -> None:
    assert _decisions(85) == [Decision.PRUNED] + [Decision.INCLUDED] * 5


def test_a_step_that_is_the_newest_goes_in_whole() -> None:
    history = _history()[:4]
    window = assemble(
        budget=1000, system_prompt=None, summary=None, profile=None, memories=(), messages=history
    )
    assert [i.decision for i in window.items] == [Decision.INCLUDED] * 4
    assert window.items[1].reason == "the newest message is the one being answered"


def test_a_call_without_its_result_is_answered_and_a_result_without_its_call_is_text() -> None:
    calls = (ToolCall("a", "x.echo"), ToolCall("b", "x.echo"))
    prompt = [
        PromptMessage("tool", '{"n":1}', tool_call_id="orphan", tool_name="x.echo"),
        PromptMessage("user", "hi"),
        PromptMessage("assistant", "", tool_calls=calls),
        PromptMessage("tool", "{}", tool_call_id="b"),
        PromptMessage("tool", '{"again":1}', tool_call_id="b", tool_name="x.echo"),
        PromptMessage("tool", "{}", tool_call_id="a"),
        PromptMessage("user", "next"),
        PromptMessage("assistant", "", tool_calls=(ToolCall("c", "x.echo"),)),
    ]
    shaped = well_formed(prompt)
    assert [(m.role, m.tool_call_id) for m in shaped] == [
        ("user", ""),  # the orphan result, as text: what it said is not lost
        ("user", ""),
        ("assistant", ""),
        ("tool", "a"),  # every call answered, in call order, once
        ("tool", "b"),
        ("user", ""),  # the second answer to b, as text after the answers
        ("user", ""),
        ("assistant", ""),
        ("tool", "c"),  # no result was stored: answered with an error
    ]
    assert shaped[0].content == '[result of x.echo]\n{"n":1}'
    assert shaped[5].content == '[result of x.echo]\n{"again":1}'
    assert [c.id for c in shaped[2].tool_calls] == ["a", "b"]
    assert shaped[-1].tool_error
    assert "no result was recorded" in shaped[-1].content
    assert well_formed(shaped) == shaped  # applying the rule again changes nothing
