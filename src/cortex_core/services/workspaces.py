"""Workspaces and their members (WorkspaceService).

Tenancy (checked by :mod:`cortex_core.services.access`): a workspace the caller
does not belong to is ``NotFound`` exactly like one that does not exist. Any
member reads; only owners change the workspace or its members; a workspace
always keeps one owner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from cortex_core import errors
from cortex_core.domain.events import (
    MemberAdded,
    MemberRemoved,
    WorkspaceCreated,
    WorkspaceDeleted,
    WorkspaceUpdated,
)
from cortex_core.domain.identity import (
    MAX_DESCRIPTION,
    MAX_DISPLAY_NAME,
    Caller,
    Membership,
    MemberView,
    Role,
    Workspace,
    email_violation,
    new_id,
    normalize_email,
    reject,
    text_violation,
)
from cortex_core.domain.paging import Page, PageRequest
from cortex_core.ports import Clock, UnitOfWorkFactory
from cortex_core.services.access import require_role
from cortex_core.services.dispatcher import EventBus

UPDATABLE_FIELDS = frozenset({"display_name", "description", "token_budget"})


@dataclasses.dataclass(frozen=True, slots=True)
class WorkspaceView:
    workspace: Workspace
    caller_role: Role


class Workspaces:
    def __init__(self, *, uow: UnitOfWorkFactory, clock: Clock, events: EventBus) -> None:
        self._uow = uow
        self._clock = clock
        self._events = events

    async def create(self, caller: Caller, display_name: str, description: str) -> WorkspaceView:
        _validate(display_name, description, fields=UPDATABLE_FIELDS)
        now = self._clock.now()
        workspace = Workspace(
            id=new_id(),
            display_name=display_name.strip(),
            description=description,
            create_time=now,
            update_time=now,
        )
        async with self._uow() as uow:
            await uow.workspaces.add(workspace)
            await uow.workspaces.add_member(
                Membership(workspace.id, caller.user_id, Role.OWNER, now)
            )
            user = caller.user
            owner = MemberView(
                workspace.id, user.id, user.email, user.display_name, Role.OWNER, now
            )
            await self._events.commit(
                uow,
                [
                    WorkspaceCreated(actor_id=user.id, time=now, workspace=workspace),
                    MemberAdded(actor_id=user.id, time=now, member=owner),
                ],
            )
        return WorkspaceView(workspace, Role.OWNER)

    async def get(self, caller: Caller, workspace_id: str) -> WorkspaceView:
        async with self._uow() as uow:
            workspace, membership = await require_role(uow, caller, workspace_id)
        return WorkspaceView(workspace, membership.role)

    async def list(self, caller: Caller, page: PageRequest) -> Page[WorkspaceView]:
        async with self._uow() as uow:
            found = await uow.workspaces.list_for_user(caller.user_id, page)
            views = []
            for workspace in found.items:
                membership = await uow.workspaces.get_membership(workspace.id, caller.user_id)
                role = membership.role if membership else Role.VIEWER
                views.append(WorkspaceView(workspace, role))
        return Page(items=views, next_page_token=found.next_page_token)

    async def update(
        self,
        caller: Caller,
        workspace_id: str,
        *,
        display_name: str,
        description: str,
        fields: Collection[str],
        token_budget: int = 0,
    ) -> WorkspaceView:
        unknown = sorted(set(fields) - UPDATABLE_FIELDS)
        if unknown:
            raise errors.InvalidArgument(
                "update_mask names fields that cannot be updated",
                [
                    errors.FieldViolation("update_mask", f"'{name}' cannot be updated")
                    for name in unknown
                ],
            )
        fields = set(fields) or set(UPDATABLE_FIELDS)
        _validate(display_name, description, fields=fields)
        if "token_budget" in fields and token_budget < 0:
            raise errors.InvalidArgument(
                "token_budget must not be negative",
                [errors.FieldViolation("token_budget", "must be 0 (no limit) or more")],
            )
        async with self._uow() as uow:
            workspace, membership = await require_role(uow, caller, workspace_id, owner=True)
            changes: dict[str, object] = {"update_time": self._clock.now()}
            if "display_name" in fields:
                changes["display_name"] = display_name.strip()
            if "description" in fields:
                changes["description"] = description
            if "token_budget" in fields:
                changes["token_budget"] = token_budget
            workspace = dataclasses.replace(workspace, **changes)  # type: ignore[arg-type]
            await uow.workspaces.update(workspace)
            await self._events.commit(
                uow,
                [
                    WorkspaceUpdated(
                        actor_id=caller.user_id,
                        time=workspace.update_time,
                        workspace=workspace,
                        fields=tuple(sorted(fields)),
                    )
                ],
            )
        return WorkspaceView(workspace, membership.role)

    async def delete(self, caller: Caller, workspace_id: str) -> None:
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id, owner=True)
            await uow.workspaces.delete(workspace_id)
            await self._events.commit(
                uow,
                [
                    WorkspaceDeleted(
                        actor_id=caller.user_id,
                        time=self._clock.now(),
                        deleted_workspace_id=workspace_id,
                    )
                ],
            )

    async def add_member(
        self, caller: Caller, workspace_id: str, email: str, role: Role | None
    ) -> MemberView:
        reject(
            [
                email_violation(email),
                None
                if role is not None
                else errors.FieldViolation("role", "is required", "REQUIRED"),
            ]
        )
        assert role is not None
        now = self._clock.now()
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id, owner=True)
            user = await uow.users.get_by_email(normalize_email(email))
            if user is None:
                raise errors.NotFound("no user has this email", reason="USER_NOT_FOUND")
            if await uow.workspaces.get_membership(workspace_id, user.id) is not None:
                raise errors.AlreadyExists("the user is already a member", reason="ALREADY_MEMBER")
            await uow.workspaces.add_member(Membership(workspace_id, user.id, role, now))
            member = MemberView(workspace_id, user.id, user.email, user.display_name, role, now)
            await self._events.commit(
                uow, [MemberAdded(actor_id=caller.user_id, time=now, member=member)]
            )
        return member

    async def remove_member(self, caller: Caller, workspace_id: str, email: str) -> MemberView:
        reject([email_violation(email)])
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id)
            user = await uow.users.get_by_email(normalize_email(email))
            membership = (
                await uow.workspaces.get_membership(workspace_id, user.id) if user else None
            )
            if user is None or membership is None:
                raise errors.NotFound("no member has this email", reason="MEMBER_NOT_FOUND")
            if user.id != caller.user_id:
                await require_role(uow, caller, workspace_id, owner=True)
            if (
                membership.role is Role.OWNER
                and await uow.workspaces.count_owners(workspace_id) <= 1
            ):
                raise errors.FailedPrecondition(
                    "a workspace must keep at least one owner", reason="LAST_OWNER"
                )
            await uow.workspaces.remove_member(workspace_id, user.id)
            removed = MemberView(
                workspace_id,
                user.id,
                user.email,
                user.display_name,
                membership.role,
                membership.create_time,
            )
            await self._events.commit(
                uow,
                [MemberRemoved(actor_id=caller.user_id, time=self._clock.now(), member=removed)],
            )
        return removed

    async def list_members(
        self, caller: Caller, workspace_id: str, page: PageRequest
    ) -> Page[MemberView]:
        async with self._uow() as uow:
            await require_role(uow, caller, workspace_id)
            return await uow.workspaces.list_members(workspace_id, page)


def _validate(display_name: str, description: str, *, fields: Collection[str]) -> None:
    reject(
        [
            text_violation(display_name, "display_name", required=True, limit=MAX_DISPLAY_NAME)
            if "display_name" in fields
            else None,
            text_violation(description, "description", required=False, limit=MAX_DESCRIPTION)
            if "description" in fields
            else None,
        ]
    )
