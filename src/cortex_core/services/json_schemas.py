"""JSON Schema checks with ``jsonschema``: the one place that turns a value's
problems into field violations (tool input, task input, answers, task output)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import jsonschema
import jsonschema.protocols
from jsonschema import exceptions as schema_errors

from cortex_core import errors

MAX_VIOLATIONS = 10


def compile_schema(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for ``schema`` (its ``$schema``'s draft, 2020-12 by default);
    compile once what is checked often."""
    validator_class = jsonschema.validators.validator_for(schema)
    return validator_class(dict(schema))


def violations(
    schema: Mapping[str, Any] | jsonschema.protocols.Validator, value: object, field: str
) -> list[errors.FieldViolation]:
    """One violation per problem of ``value`` against ``schema`` (a schema or a
    compiled validator; at most 10, most relevant first), each on ``field`` plus
    the path inside the value (``input.city``; ``input`` for the whole object)."""
    validator = compile_schema(schema) if isinstance(schema, Mapping) else schema
    problems = sorted(validator.iter_errors(cast(Any, _plain(value))), key=schema_errors.relevance)
    return [
        errors.FieldViolation(
            field=".".join([field, *(str(part) for part in problem.absolute_path)]),
            description=problem.message[:256],
            reason="SCHEMA_MISMATCH",
        )
        for problem in problems[:MAX_VIOLATIONS]
    ]


def check_schema(schema: Mapping[str, Any]) -> str:
    """The problem with ``schema`` as a JSON Schema, or "" when it is one."""
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(dict(schema))
    except schema_errors.SchemaError as exc:
        return exc.message
    return ""


def _plain(value: object) -> object:
    """Mappings (read-only views included) as dicts, so every validator accepts them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
