"""The Authenticator reads a session once for every call that needs it at the
same moment; one of those calls going away must not take the others with it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import TracebackType

from cortex_core.adapters.clock import ManualClock
from cortex_core.adapters.sql.database import SqlDatabase, SqlUnitOfWork
from cortex_core.domain.identity import Caller, Session, User
from cortex_core.services.authentication import Authenticator

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class GatedUnitOfWork:
    """A real unit of work that opens only once ``gate`` is set (a slow database)."""

    def __init__(self, inner: SqlUnitOfWork, gate: asyncio.Event, entered: asyncio.Event) -> None:
        self._inner = inner
        self._gate = gate
        self._entered = entered

    async def __aenter__(self) -> SqlUnitOfWork:
        self._entered.set()
        await self._gate.wait()
        return await self._inner.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)


async def test_a_cancelled_call_does_not_fail_the_others_sharing_its_session_read(
    database: SqlDatabase,
) -> None:
    user = User("u1", "ada@example.com", "Ada", "$argon2id$x", T0, T0)
    async with database.unit_of_work() as uow:
        await uow.users.add(user)
        await uow.sessions.add(Session("s1", "u1", T0, T0, T0 + timedelta(days=1)))
        await uow.commit()
    gate, entered = asyncio.Event(), asyncio.Event()
    authenticator = Authenticator(
        tokens=None,  # type: ignore[arg-type]  # ensure_active never verifies a token
        uow=lambda: GatedUnitOfWork(database.unit_of_work(), gate, entered),  # type: ignore[arg-type, return-value]
        clock=ManualClock(T0),
    )
    caller = Caller(user=user, session_id="s1", token_expire_time=T0 + timedelta(hours=1))

    first = asyncio.create_task(authenticator.ensure_active(caller))
    await entered.wait()  # the first call is reading the session
    second = asyncio.create_task(authenticator.ensure_active(caller))
    await asyncio.sleep(0)  # the second call waits for the same read
    first.cancel()  # e.g. its client went away
    await asyncio.gather(first, return_exceptions=True)
    gate.set()

    await asyncio.wait_for(second, 10)  # active: no error, and not cancelled
    assert first.cancelled()
