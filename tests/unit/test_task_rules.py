"""The task state machine and the expert catalog's start-up checks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cortex_core import errors
from cortex_core.adapters.experts_config import DEFAULT_EXPERTS, load_experts
from cortex_core.domain.tasks import TERMINAL, Task, TaskState, can_transition, check_transition
from cortex_core.settings import Settings, SettingsError

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("terminal", sorted(TERMINAL, key=lambda s: s.value))
def test_a_terminal_state_never_changes_again(terminal: TaskState) -> None:
    for target in TaskState:
        assert not can_transition(terminal, target)
    with pytest.raises(errors.FailedPrecondition) as refused:
        check_transition(terminal, TaskState.SUCCEEDED)
    assert refused.value.reason == "TASK_ALREADY_COMPLETED"


def test_only_the_lifecycle_steps_are_allowed() -> None:
    assert can_transition(TaskState.QUEUED, TaskState.RUNNING)
    assert can_transition(TaskState.RUNNING, TaskState.QUEUED)  # a retry
    assert can_transition(TaskState.RUNNING, TaskState.INPUT_REQUIRED)
    assert can_transition(TaskState.INPUT_REQUIRED, TaskState.QUEUED)
    assert not can_transition(TaskState.QUEUED, TaskState.SUCCEEDED)
    assert not can_transition(TaskState.INPUT_REQUIRED, TaskState.RUNNING)
    with pytest.raises(errors.FailedPrecondition) as refused:
        check_transition(TaskState.QUEUED, TaskState.INPUT_REQUIRED)
    assert refused.value.reason == "INVALID_TASK_TRANSITION"


def test_reaching_a_terminal_state_sets_its_time_and_drops_the_lease() -> None:
    task = Task("t", "w", "echo", {}, 3, "u", T0, T0, state=TaskState.RUNNING, lease_owner="a")
    done = task.moved(TaskState.SUCCEEDED, T0, output={"text": "x"})
    assert done.complete_time == T0
    assert done.lease_owner == ""
    with pytest.raises(errors.FailedPrecondition):
        done.moved(TaskState.CANCELLED, T0)


def test_without_a_file_the_embedded_experts_ship() -> None:
    assert {e.id for e in load_experts("", ["local"])} >= {"echo", "summarize", "extract"}
    assert Settings.from_env({}).experts == DEFAULT_EXPERTS


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[experts.bad]\nproviders = ['gpt']\n", "experts.bad.providers"),
        ("[experts.bad]\nmax_attempts = 11\n", "experts.bad.max_attempts"),
        ("[experts.bad]\ntools = ['no dots']\n", "experts.bad.tools"),
        ("[experts.bad.input_schema]\ntype = 12\n", "experts.bad.input_schema"),
        ("[experts.bad]\ncolour = 'red'\n", "experts.bad has unknown keys"),
        ("[experts.Bad]\n", "experts.Bad"),
        ("not toml = = 1", "is not valid TOML"),
    ],
)
def test_a_bad_experts_file_stops_the_start_naming_the_variable_and_key(
    tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "experts.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as stopped:
        Settings.from_env({"CORTEX_EXPERTS_CONFIG": str(path)})
    assert "CORTEX_EXPERTS_CONFIG" in str(stopped.value)
    assert named in str(stopped.value)


def test_an_experts_file_is_read_with_its_schemas_and_provider_names(tmp_path: Path) -> None:
    path = tmp_path / "experts.toml"
    path.write_text(
        """
[experts.review]
display_name = "Reviewer"
instructions = "Review."
providers = ["local"]
tools = ["cortex.current_time"]
max_attempts = 2
timeout = 30
max_steps = 3
token_budget = 1000

[experts.review.input_schema]
type = "object"
required = ["diff"]
properties.diff = { type = "string" }

[experts.review.output_schema]
type = "object"
"""
    )
    (expert,) = Settings.from_env({"CORTEX_EXPERTS_CONFIG": str(path)}).experts
    assert expert.name == "experts/review"
    assert expert.providers == ("local",)
    assert dict(expert.input_schema)["required"] == ["diff"]
    assert expert.output_schema == {"type": "object"}
    assert (expert.max_attempts, expert.timeout, expert.max_steps) == (2, 30.0, 3)
