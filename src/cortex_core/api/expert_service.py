"""``cortex.experts.v1.ExpertService``: experts, and the tasks delegated to them.

Converting only: validation, access and every state rule live in the use cases
(``services/experts.py``, ``services/tasks.py``); who may keep a ``WatchTask``
open, and how it resumes, is ``services/task_watch.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from cortex.experts.v1 import expert_service_pb2 as pb
from cortex.experts.v1 import expert_service_pb2_grpc as pb_grpc

from cortex_core import errors
from cortex_core.api import convert
from cortex_core.api import convert_tasks as ct
from cortex_core.api.context import ServicerContext, current_caller
from cortex_core.api.convert_experts import expert
from cortex_core.domain import names
from cortex_core.domain.event_records import Heartbeat
from cortex_core.domain.paging import PageRequest
from cortex_core.domain.tasks import EXPERT, TASK
from cortex_core.ports import Clock
from cortex_core.services.experts import Experts
from cortex_core.services.task_watch import JournalPruned, TaskWatches
from cortex_core.services.tasks import Tasks


def _task_ids(name: str) -> tuple[str, str]:
    workspace_id, task_id = convert.parse_name(name, TASK, "name")
    return workspace_id, task_id


def _workspace_id(name: str) -> str:
    (workspace_id,) = convert.parse_name(name, names.WORKSPACE, "parent")
    return workspace_id


def _expert_id(name: str, field: str) -> str:
    (expert_id,) = convert.parse_name(name, EXPERT, field)
    return expert_id


class ExpertService(pb_grpc.ExpertServiceServicer):
    def __init__(
        self, *, experts: Experts, tasks: Tasks, watches: TaskWatches, clock: Clock
    ) -> None:
        self._experts = experts
        self._tasks = tasks
        self._watches = watches
        self._clock = clock

    async def ListExperts(
        self, request: pb.ListExpertsRequest, context: ServicerContext
    ) -> pb.ListExpertsResponse:
        page = self._experts.list(PageRequest.parse(request.page_size, request.page_token))
        return pb.ListExpertsResponse(
            experts=[expert(e) for e in page.items], next_page_token=page.next_page_token
        )

    async def GetExpert(
        self, request: pb.GetExpertRequest, context: ServicerContext
    ) -> pb.GetExpertResponse:
        found = self._experts.get(_expert_id(request.name, "name"))
        return pb.GetExpertResponse(expert=expert(found))

    async def CreateTask(
        self, request: pb.CreateTaskRequest, context: ServicerContext
    ) -> pb.CreateTaskResponse:
        workspace_id = _workspace_id(request.parent)
        try:
            expert_id = _expert_id(request.task.expert, "task.expert")
        except errors.InvalidArgument:
            expert_id = ""  # reported by the use case, after the workspace check
        created = await self._tasks.create(
            current_caller(),
            workspace_id,
            expert_id,
            ct.json_object(request.task.input),
            max_attempts=request.task.max_attempts,
            request_id=request.request_id,
        )
        return pb.CreateTaskResponse(task=ct.task(created))

    async def GetTask(
        self, request: pb.GetTaskRequest, context: ServicerContext
    ) -> pb.GetTaskResponse:
        found = await self._tasks.get(current_caller(), *_task_ids(request.name))
        return pb.GetTaskResponse(task=ct.task(found))

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: ServicerContext
    ) -> pb.ListTasksResponse:
        workspace_id = _workspace_id(request.parent)
        expert_id = _expert_id(request.expert, "expert") if request.expert else ""
        page = await self._tasks.list(
            current_caller(),
            workspace_id,
            PageRequest.parse(request.page_size, request.page_token),
            state=ct.state_from_proto(request.state),
            expert_id=expert_id,
        )
        return pb.ListTasksResponse(
            tasks=[ct.task(t) for t in page.items], next_page_token=page.next_page_token
        )

    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: ServicerContext
    ) -> pb.CancelTaskResponse:
        cancelled = await self._tasks.cancel(current_caller(), *_task_ids(request.name))
        return pb.CancelTaskResponse(task=ct.task(cancelled))

    async def ProvideTaskInput(
        self, request: pb.ProvideTaskInputRequest, context: ServicerContext
    ) -> pb.ProvideTaskInputResponse:
        resumed = await self._tasks.provide_input(
            current_caller(),
            *_task_ids(request.name),
            request.input_request_id,
            ct.json_object(request.input),
        )
        return pb.ProvideTaskInputResponse(task=ct.task(resumed))

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: ServicerContext
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        workspace_id, task_id = _task_ids(request.name)
        watch = await self._watches.open(
            current_caller(), workspace_id, task_id, request.after_sequence
        )
        async with watch:
            async for item in watch:
                if isinstance(item, Heartbeat):
                    yield ct.heartbeat_frame(self._clock.now())
                elif isinstance(item, JournalPruned):
                    yield ct.pruned_frame(item)
                else:
                    yield ct.watch_frame(item)
