"""The expert catalog: the TOML file named by ``CORTEX_EXPERTS_CONFIG``, or the
embedded default experts (which work with the local development provider).

One ``[experts.<id>]`` table per expert (``experts/<id>`` is its name)::

    [experts.review]
    display_name = "Code reviewer"
    description = "Reviews a diff and lists problems."
    instructions = "You review code. Answer with a JSON object ..."
    providers = ["gpt", "local"]         # names from the LLM configuration; default: the chain
    tools = ["cortex.current_time"]      # tool ids (`tools/<id>`)
    max_attempts = 3                     # 1..10
    timeout = 300                        # seconds per attempt
    max_steps = 8                        # model turns that may call tools
    token_budget = 0                     # tokens per attempt, 0 = no limit

    [experts.review.input_schema]        # JSON Schema (draft 2020-12) of the task input
    type = "object"
    required = ["diff"]
    properties.diff = { type = "string" }

    [experts.review.output_schema]       # optional: without it the output is {"text": ...}
    type = "object"

Everything is checked at start; a bad file raises :class:`ExpertsConfigError`
naming the variable and the key (the CLI exits 2 with it). Whether a listed
tool exists is only known once its MCP server answers, so tool ids are checked
for their form here and a missing tool is answered TOOL_UNAVAILABLE when called.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cortex_core.domain.tasks import MAX_ATTEMPTS, MIN_ATTEMPTS, Expert, frozen
from cortex_core.domain.tools import TOOL_ID
from cortex_core.services.json_schemas import check_schema

VARIABLE = "CORTEX_EXPERTS_CONFIG"
EXPERT_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_KEYS = {
    "display_name",
    "description",
    "instructions",
    "providers",
    "tools",
    "max_attempts",
    "timeout",
    "max_steps",
    "token_budget",
    "input_schema",
    "output_schema",
}

_TEXT_INPUT = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 100000}},
    "required": ["text"],
    "additionalProperties": False,
}

#: The embedded experts (``make run``): they work with the local development provider,
#: whose directives (docs/tasks.md) go in the ``text`` field.
DEFAULT_EXPERTS: tuple[Expert, ...] = (
    Expert(
        id="echo",
        display_name="Echo",
        description="Answers with a description of its input; for trying tasks out.",
        instructions="Repeat the task's text back.",
        input_schema=frozen(_TEXT_INPUT),
        max_attempts=3,
        timeout=120.0,
    ),
    Expert(
        id="summarize",
        display_name="Summarizer",
        description="Summarizes a text in a few sentences.",
        instructions="Summarize the text of the task input in a few sentences.",
        input_schema=frozen(_TEXT_INPUT),
        max_attempts=3,
        timeout=120.0,
    ),
    Expert(
        id="extract",
        display_name="Field extractor",
        description="Extracts the requested fields from a text as a JSON object.",
        instructions=(
            "Extract the fields named in `fields` from `text`. Answer with one JSON object "
            'of the form {"fields": {"<name>": "<value>"}} and nothing else.'
        ),
        input_schema=frozen(
            {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "minLength": 1},
                    "fields": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["text"],
                "additionalProperties": False,
            }
        ),
        output_schema=frozen(
            {
                "type": "object",
                "properties": {"fields": {"type": "object"}},
                "required": ["fields"],
            }
        ),
        max_attempts=3,
        timeout=120.0,
    ),
)


class ExpertsConfigError(ValueError):
    """The experts file cannot be used; the message names the variable and key."""


def load_experts(path: str, providers: Sequence[str]) -> tuple[Expert, ...]:
    """The experts of the file at ``path`` (the embedded defaults for ""), with
    every ``providers`` entry one of ``providers`` (the LLM configuration's)."""
    if not path:
        return DEFAULT_EXPERTS
    where = f"{VARIABLE}={path!r}"
    try:
        with Path(path).open("rb") as f:
            document = tomllib.load(f)
    except OSError as exc:
        raise ExpertsConfigError(f"{where} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ExpertsConfigError(f"{where} is not valid TOML: {exc}") from None
    unknown = set(document) - {"experts"}
    if unknown:
        raise ExpertsConfigError(f"{where} has unknown top-level keys {sorted(unknown)}")
    tables = document.get("experts")
    if not isinstance(tables, dict) or not tables:
        raise ExpertsConfigError(f"{where}: experts must hold at least one [experts.<id>] table")
    return tuple(
        _expert(expert_id, raw, providers, f"{where}: experts.{expert_id}")
        for expert_id, raw in sorted(tables.items())
    )


def _expert(expert_id: str, raw: object, known: Sequence[str], here: str) -> Expert:
    if not EXPERT_ID.match(expert_id):
        raise ExpertsConfigError(
            f"{here}: the id must be lowercase letters, digits and '-', starting with a letter"
        )
    if not isinstance(raw, dict):
        raise ExpertsConfigError(f"{here} must be a table")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ExpertsConfigError(f"{here} has unknown keys {sorted(unknown)}")
    fields = _Fields(raw, here)
    providers = tuple(fields.strings("providers"))
    for name in providers:
        if name not in known:
            raise ExpertsConfigError(
                f"{here}.providers names {name!r}, which is not in the LLM configuration "
                f"({', '.join(known)})"
            )
    tools = tuple(fields.strings("tools"))
    for tool in tools:
        if not TOOL_ID.match(tool):
            raise ExpertsConfigError(f"{here}.tools: {tool!r} is not a tool id (<server>.<name>)")
    output_schema = fields.schema("output_schema", required=False)
    return Expert(
        id=expert_id,
        display_name=fields.text("display_name", expert_id),
        description=fields.text("description", ""),
        instructions=fields.text("instructions", ""),
        providers=providers,
        tools=tools,
        input_schema=frozen(fields.schema("input_schema", required=False) or {"type": "object"}),
        output_schema=frozen(output_schema) if output_schema is not None else None,
        max_attempts=fields.integer("max_attempts", 3, MIN_ATTEMPTS, MAX_ATTEMPTS),
        timeout=fields.seconds("timeout", 300.0),
        max_steps=fields.integer("max_steps", 8, 1, 100),
        token_budget=fields.integer("token_budget", 0, 0, 10**12),
    )


class _Fields:
    def __init__(self, raw: Mapping[str, Any], here: str) -> None:
        self._raw = raw
        self._here = here

    def _bad(self, key: str, expected: str) -> ExpertsConfigError:
        return ExpertsConfigError(f"{self._here}.{key} is invalid: expected {expected}")

    def text(self, key: str, default: str) -> str:
        value = self._raw.get(key, default)
        if not isinstance(value, str):
            raise self._bad(key, "a string")
        return value

    def strings(self, key: str) -> list[str]:
        value = self._raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._bad(key, "a list of strings")
        if len(set(value)) != len(value):
            raise self._bad(key, "a list without repeats")
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self._raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._bad(key, f"a whole number from {low} to {high}")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self._raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self._bad(key, "a number of seconds greater than 0")
        return float(value)

    def schema(self, key: str, *, required: bool) -> dict[str, Any] | None:
        value = self._raw.get(key)
        if value is None:
            if required:
                raise self._bad(key, "a table holding a JSON Schema")
            return None
        if not isinstance(value, dict):
            raise self._bad(key, "a table holding a JSON Schema")
        problem = check_schema(value)
        if problem:
            raise ExpertsConfigError(f"{self._here}.{key} is not a valid JSON Schema: {problem}")
        return value
