"""Who may read or write a workspace, a conversation or a memory: the one home
of every access check the use cases make.

Tenancy: every check starts from the caller's membership of the workspace. A
resource in a workspace the caller does not belong to raises exactly the same
``NotFound`` as one that does not exist (WORKSPACE_NOT_FOUND,
CONVERSATION_NOT_FOUND, MEMORY_NOT_FOUND), so ids cannot be probed. Any member
reads; editors and owners write (``EDITOR_REQUIRED``); only owners change the
workspace or its members (``OWNER_REQUIRED``) — those two are PERMISSION_DENIED,
since the caller already knows the workspace exists.

Each check runs inside the caller's unit of work, so the check and what it
guards read the same transaction.
"""

from __future__ import annotations

from cortex_core import errors
from cortex_core.domain.conversations import Conversation
from cortex_core.domain.identity import Actor, Membership, Role, Workspace
from cortex_core.ports import UnitOfWork


def workspace_not_found() -> errors.NotFound:
    return errors.NotFound("workspace not found", reason="WORKSPACE_NOT_FOUND")


def conversation_not_found() -> errors.NotFound:
    return errors.NotFound("conversation not found", reason="CONVERSATION_NOT_FOUND")


def memory_not_found() -> errors.NotFound:
    return errors.NotFound("memory not found", reason="MEMORY_NOT_FOUND")


async def require_role(
    uow: UnitOfWork, caller: Actor, workspace_id: str, *, owner: bool = False, write: bool = False
) -> tuple[Workspace, Membership]:
    """The workspace and the caller's membership. Raise NotFound
    (WORKSPACE_NOT_FOUND) for a non-member, PermissionDenied (OWNER_REQUIRED,
    EDITOR_REQUIRED) for a member whose role is not enough."""
    found = await uow.workspaces.get_as_member(workspace_id, caller.user_id)
    if found is None:
        raise workspace_not_found()
    workspace, membership = found
    if owner and membership.role is not Role.OWNER:
        raise errors.PermissionDenied(
            "only owners of the workspace can do this", reason="OWNER_REQUIRED"
        )
    if write and not membership.role.can_write:
        raise errors.PermissionDenied(
            "viewers cannot change the workspace's content", reason="EDITOR_REQUIRED"
        )
    return workspace, membership


async def conversation_access(
    uow: UnitOfWork, caller: Actor, workspace_id: str, conversation_id: str, *, write: bool = False
) -> tuple[Workspace, Conversation]:
    """The workspace and the conversation, if the caller may read it (and write to
    it when ``write``). A non-member gets CONVERSATION_NOT_FOUND, like a missing
    conversation; a viewer asking to write gets EDITOR_REQUIRED."""
    try:
        workspace, _ = await require_role(uow, caller, workspace_id, write=write)
    except errors.NotFound:
        raise conversation_not_found() from None
    conversation = await uow.conversations.get(workspace_id, conversation_id)
    if conversation is None:
        raise conversation_not_found()
    return workspace, conversation


async def require_conversation(
    uow: UnitOfWork, caller: Actor, workspace_id: str, conversation_id: str, *, write: bool = False
) -> Conversation:
    """:func:`conversation_access` without the workspace."""
    _, conversation = await conversation_access(
        uow, caller, workspace_id, conversation_id, write=write
    )
    return conversation


async def require_memory_access(
    uow: UnitOfWork, caller: Actor, workspace_id: str, *, write: bool = False
) -> None:
    """Check that the caller may read (or write) the memories of a workspace when
    asking for one memory: a non-member gets MEMORY_NOT_FOUND, like a missing one."""
    try:
        await require_role(uow, caller, workspace_id, write=write)
    except errors.NotFound:
        raise memory_not_found() from None
