"""Expert protos."""

from __future__ import annotations

from cortex.experts.v1 import expert_pb2

from cortex_core.api import convert_conversations as cc
from cortex_core.api.convert import duration
from cortex_core.domain import names
from cortex_core.domain.tasks import Expert


def expert(value: Expert) -> expert_pb2.Expert:
    return expert_pb2.Expert(
        name=value.name,
        display_name=value.display_name,
        description=value.description,
        input_schema=cc.struct(value.input_schema),
        output_schema=cc.struct(value.output_schema) if value.output_schema is not None else None,
        tools=[names.tool_name(tool_id) for tool_id in value.tools],
        default_max_attempts=value.max_attempts,
        attempt_timeout=duration(value.timeout),
        max_steps=value.max_steps,
        token_budget=value.token_budget,
        providers=list(value.providers),
    )
