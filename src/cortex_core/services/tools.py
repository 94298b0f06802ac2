"""ToolService's use cases: list the tools, and invoke one for a workspace.

Listing needs any signed-in user. Invoking needs EDITOR in the workspace (checked
first, so an outsider learns nothing, not even whether the tool exists: another
tenant's workspace is WORKSPACE_NOT_FOUND), then runs the call through the one
:class:`~cortex_core.services.tool_invoker.ToolInvoker` (lookup, input validation,
deadline). No unit of work stays open while the tool runs.

A tool that ran and reported a failure is an outcome, not an error:
:meth:`Tools.invoke` returns it in :attr:`Invocation.failure`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cortex_core import errors
from cortex_core.domain.identity import Caller
from cortex_core.domain.paging import Page, PageRequest, encode_token, invalid_page_token
from cortex_core.domain.tools import ToolContext, ToolSpec
from cortex_core.ports import UnitOfWorkFactory
from cortex_core.services.access import require_role
from cortex_core.services.tool_invoker import ToolInvoker

_TOKEN_KIND = "tools"


@dataclasses.dataclass(frozen=True, slots=True)
class Invocation:
    """What a call produced: exactly one of ``output`` and ``failure`` is set."""

    output: Mapping[str, Any] | None = None
    failure: errors.ToolFailed | None = None


class Tools:
    def __init__(self, *, uow: UnitOfWorkFactory, invoker: ToolInvoker) -> None:
        self._uow = uow
        self._invoker = invoker

    def list(self, caller: Caller, page: PageRequest) -> Page[ToolSpec]:
        """Every tool, ordered by id; the page token holds the last id returned."""
        after = ""
        if page.after is not None:
            if len(page.after) != 2 or page.after[0] != _TOKEN_KIND:
                raise invalid_page_token()
            after = page.after[1]
        remaining = [tool for tool in self._invoker.tools() if tool.id > after]
        items = remaining[: page.size]
        token = ""
        if len(remaining) > page.size:
            token = encode_token((_TOKEN_KIND, items[-1].id))
        return Page(items=items, next_page_token=token)

    async def invoke(
        self,
        caller: Caller,
        tool_id: str,
        workspace_id: str,
        arguments: Mapping[str, Any],
        *,
        time_left: float | None,
    ) -> Invocation:
        """Run the tool once. Raises NotFound (WORKSPACE_NOT_FOUND, TOOL_NOT_FOUND),
        PermissionDenied (EDITOR_REQUIRED), InvalidArgument (violations under
        ``input``), DeadlineExceeded (TOOL_TIMEOUT) or Unavailable (TOOL_UNAVAILABLE)."""
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id, write=True)
        context = ToolContext(workspace_id=workspace_id, user_id=caller.user_id)
        try:
            output = await self._invoker.invoke(tool_id, arguments, context, time_left=time_left)
        except errors.ToolFailed as failure:
            return Invocation(failure=failure)
        return Invocation(output=output)
