"""The task runtime over a real database, for tests: the use cases, runners under
a real supervisor, the local development provider and a recording tool source.

Each :class:`Runner` is one "process" (its own worker id and, unless shared,
its own signals); two runners on one PostgreSQL behave as two replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

from cortex_core.adapters.clock import SystemClock
from cortex_core.adapters.experts_config import DEFAULT_EXPERTS
from cortex_core.adapters.llm.local import LocalDevelopmentProvider
from cortex_core.adapters.sql.database import SqlDatabase
from cortex_core.adapters.task_signals import LocalTaskSignals
from cortex_core.adapters.token_counter import EstimatedTokenCounter
from cortex_core.domain.identity import Caller, Membership, Role, User, Workspace
from cortex_core.domain.tasks import Expert, Task, TaskState, frozen
from cortex_core.ports import TaskSignals
from cortex_core.services.dispatcher import EventBus
from cortex_core.services.experts import ExpertCatalog
from cortex_core.services.supervisor import Loop, Supervisor, every
from cortex_core.services.task_runner import RunnerPolicy, TaskRunner
from cortex_core.services.tasks import Tasks
from cortex_core.services.tool_invoker import ToolInvoker
from support.tool_sources import RecordingTools

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TEXT = frozen({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})

TEST_EXPERTS: tuple[Expert, ...] = (
    *DEFAULT_EXPERTS,
    Expert(
        id="guarded",
        display_name="Guarded",
        description="Calls tools, some of which need approval.",
        instructions="Use the tools.",
        tools=("testing.guarded", "testing.echo", "testing.slow"),
        input_schema=TEXT,
        max_attempts=2,
        timeout=60.0,
    ),
    Expert(
        id="hasty",
        display_name="Hasty",
        description="Has very little time per attempt.",
        instructions="Be quick.",
        input_schema=TEXT,
        max_attempts=2,
        timeout=0.3,
    ),
)

FAST = RunnerPolicy(
    workers=4,
    lease=2.0,
    heartbeat=0.2,
    poll=0.2,
    retry_initial=0.05,
    retry_max=0.2,
    input_ttl=60.0,
)


async def seed(database: SqlDatabase, user_id: str = "u1", role: Role = Role.OWNER) -> Caller:
    """A user who is ``role`` in workspace ``w1`` (created with the first user)."""
    user = User(user_id, f"{user_id}@example.com", user_id, "$argon2id$x", T0, T0)
    async with database.unit_of_work() as uow:
        await uow.users.add(user)
        if await uow.workspaces.get("w1") is None:
            await uow.workspaces.add(
                Workspace(id="w1", display_name="W", create_time=T0, update_time=T0)
            )
        await uow.workspaces.add_member(Membership("w1", user_id, role, T0))
        await uow.commit()
    return Caller(user=user, session_id="s1", token_expire_time=T0 + timedelta(days=3650))


class Runner:
    """One runner under its own supervisor."""

    def __init__(
        self, database: SqlDatabase, catalog: ExpertCatalog, signals: TaskSignals,
        tools: RecordingTools, policy: RunnerPolicy, name: str, events: EventBus,
    ) -> None:  # fmt: skip
        self.runner = TaskRunner(
            uow=database.unit_of_work,
            clock=SystemClock(),
            events=events,
            signals=signals,
            experts=catalog,
            invoker=ToolInvoker([tools]),
            counter=EstimatedTokenCounter(),
            worker_id=name,
            policy=policy,
        )
        self.supervisor = Supervisor(initial_backoff=0.1, max_backoff=0.5, healthy_after=1.0)
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._loops = await self.supervisor.start(
            [
                Loop("tasks", self.runner.run),
                Loop("task-sweeper", every(0.1, self.runner.sweep)),
            ]
        )

    async def stop(self) -> None:
        """Stop claiming and cut running attempts as a crash would (no final write)."""
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        prefix = f"task:{self.runner.worker_id}:"
        attempts = [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix)]
        for attempt in attempts:
            attempt.cancel()
        await asyncio.gather(*attempts, return_exceptions=True)

    async def drain(self, seconds: float) -> None:
        await self.runner.drain(seconds)
        await self.stop()


class Harness:
    def __init__(
        self,
        database: SqlDatabase,
        *,
        delay: float = 0.0,
        policy: RunnerPolicy = FAST,
        queue_limit: int = 100,
        input_ttl: float = 60.0,
        experts: Sequence[Expert] = TEST_EXPERTS,
    ) -> None:
        self.database = database
        self.tools = RecordingTools()
        self.provider = LocalDevelopmentProvider(delay=delay)
        self.catalog = ExpertCatalog(experts, {e.id: self.provider for e in experts})
        self.signals = LocalTaskSignals()
        self.policy = policy
        self.events = EventBus()
        self.published: list[object] = []
        self.events.subscribe(object, self._record)
        self.tasks = Tasks(
            uow=database.unit_of_work,
            clock=SystemClock(),
            events=self.events,
            signals=self.signals,
            experts=self.catalog,
            max_queued=queue_limit,
            input_ttl=input_ttl,
        )
        self.runners: list[Runner] = []

    async def _record(self, event: object) -> None:
        self.published.append(event)

    def runner(
        self, name: str = "worker-a", *, signals: TaskSignals | None = None,
        policy: RunnerPolicy | None = None,
    ) -> Runner:  # fmt: skip
        runner = Runner(
            self.database, self.catalog, signals or self.signals, self.tools,
            policy or self.policy, name, self.events,
        )  # fmt: skip
        self.runners.append(runner)
        return runner

    async def close(self) -> None:
        for runner in self.runners:
            await runner.stop()


@contextlib.asynccontextmanager
async def harness(database: SqlDatabase, **options: object) -> AsyncIterator[Harness]:
    h = Harness(database, **options)  # type: ignore[arg-type]
    try:
        yield h
    finally:
        await h.close()


async def wait_for(
    tasks: Tasks,
    caller: Caller,
    task_id: str,
    done: Callable[[Task], bool],
    within: float = 20.0,
) -> Task:
    deadline = time.monotonic() + within
    while True:
        task = await tasks.get(caller, "w1", task_id)
        if done(task):
            return task
        assert time.monotonic() < deadline, f"task still {task.state} after {within} s"
        await asyncio.sleep(0.05)


def in_state(*states: TaskState) -> Callable[[Task], bool]:
    return lambda task: task.state in states
