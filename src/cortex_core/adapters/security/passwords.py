"""argon2id password hashing on a bounded worker pool.

Hashing is deliberately expensive (about 150 ms and 64 MiB per call with the
defaults), so it never runs on the event loop: every call goes to a private
``ThreadPoolExecutor``. argon2-cffi releases the GIL while it works, so the loop
keeps serving other requests. An ``asyncio.Semaphore`` sized like the pool keeps
the executor's own queue empty (a cancelled caller never leaves a backlog of work
behind), and at most ``max_pending`` callers may wait for a worker: beyond that
the call fails at once with ``ResourceExhausted`` instead of queueing without
bound.

Passwords are NFKC-normalised before hashing and verifying (NIST SP 800-63B), so
the same password typed on systems that compose Unicode differently still
matches. They are never truncated: argon2 accepts any length, and the password
policy caps it at 1024 characters.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import unicodedata
from collections.abc import Callable
from typing import TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError

from cortex_core import errors

T = TypeVar("T")

#: OWASP's first argon2id configuration (m=19 MiB, t=2, p=1). It costs about a
#: quarter of RFC 9106's 64 MiB/t=3 profile, which on a 2-core machine is the
#: difference between ~13 and ~45 sign-ins per second; operators who want more
#: raise CORTEX_ARGON2_MEMORY_KIB / CORTEX_ARGON2_TIME_COST, and existing hashes
#: are upgraded at the next sign-in (``needs_rehash``). Single lane, so one hash
#: occupies exactly one pool worker.
DEFAULT_TIME_COST = 2
DEFAULT_MEMORY_COST_KIB = 19 * 1024
DEFAULT_PARALLELISM = 1

#: OWASP Password Storage Cheat Sheet, argon2id minimum (m=19 MiB, t=2, p=1).
OWASP_MIN_MEMORY_COST_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2


def default_max_workers() -> int:
    """``min(4, cpu count)``: enough to overlap logins, small enough to bound memory."""
    return max(1, min(4, os.cpu_count() or 1))


def _normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


class Argon2PasswordHasher:
    """The ``PasswordHasher`` port on argon2-cffi (argon2id).

    Contract:

    - ``hash`` returns a PHC string (``$argon2id$v=19$m=…,t=…,p=…$salt$hash``);
    - ``verify`` returns False for a wrong password *and* for a malformed or
      foreign hash; it never raises for a bad password;
    - ``needs_rehash`` is True when a stored hash was made with other parameters
      (or another argon2 variant), so the caller can rehash after a good login;
    - ``verify_dummy`` spends one real verification against a hash of a random
      password made with the current parameters;
    - the async methods raise ``ResourceExhausted`` (reason ``PASSWORD_HASHING_BUSY``)
      when ``max_pending`` callers already wait, and ``RuntimeError`` after ``close``.
    """

    def __init__(
        self,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST_KIB,
        parallelism: int = DEFAULT_PARALLELISM,
        max_workers: int | None = None,
        max_pending: int | None = None,
    ) -> None:
        """Create the hasher; threads start lazily, on the first call.

        ``memory_cost`` is in KiB. ``max_pending`` (default ``32 * max_workers``)
        bounds how many callers may wait for a worker at once. The constructor
        accepts parameters below the OWASP minimum only so tests can make
        legacy hashes; production code should keep the defaults.
        """
        workers = max_workers if max_workers is not None else default_max_workers()
        if workers < 1:
            raise ValueError("max_workers must be at least 1")
        pending = max_pending if max_pending is not None else 32 * workers
        if pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._parameters = argon2.Parameters(
            type=argon2.Type.ID,
            version=argon2.low_level.ARGON2_VERSION,
            salt_len=argon2.DEFAULT_RANDOM_SALT_LENGTH,
            hash_len=argon2.DEFAULT_HASH_LENGTH,
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
        )
        self._argon2 = argon2.PasswordHasher.from_parameters(self._parameters)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="argon2"
        )
        self._slots = asyncio.Semaphore(workers)
        self._max_pending = pending
        self._pending = 0
        self._dummy_hash: str | None = None
        self._dummy_lock = asyncio.Lock()
        self._closed = False

    @property
    def parameters(self) -> argon2.Parameters:
        """The parameters new hashes are made with."""
        return self._parameters

    async def hash(self, password: str) -> str:
        """Hash ``password`` (NFKC-normalised) with a fresh random salt."""
        return await self._run(self._argon2.hash, _normalize(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        """True when ``password`` matches ``password_hash``; False otherwise."""
        return await self._run(self._verify_blocking, password_hash, _normalize(password))

    def needs_rehash(self, password_hash: str) -> bool:
        """True when ``password_hash`` was not made with the current parameters.

        A hash that cannot be parsed also needs rehashing (it is replaced on the
        next successful login). Pure string parsing: safe on the event loop.
        """
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    async def verify_dummy(self, password: str) -> None:
        """Spend one real verification, against a hash no password can match."""
        await self._run(self._verify_blocking, await self._get_dummy_hash(), _normalize(password))

    async def warm_up(self) -> None:
        """Compute the dummy hash now, so the first unknown email is not slower."""
        await self._get_dummy_hash()

    def close(self) -> None:
        """Stop accepting work and release the pool without blocking.

        Queued work is cancelled; a hash already running finishes in its thread.
        Idempotent.
        """
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- internals -----------------------------------------------------------

    def _verify_blocking(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError, ValueError):
            # VerifyMismatchError is a VerificationError; InvalidHashError covers
            # strings that are not argon2 PHC hashes at all.
            return False

    async def _get_dummy_hash(self) -> str:
        async with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = await self._run(self._argon2.hash, secrets.token_urlsafe(32))
            return self._dummy_hash

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        """Run ``fn(*args)`` on the pool once a worker slot is free."""
        if self._closed:
            raise RuntimeError("the password hasher is closed")
        if self._pending >= self._max_pending:
            raise errors.ResourceExhausted(
                "the server is busy; retry later",
                retry_after=1.0,
                reason="PASSWORD_HASHING_BUSY",
            )
        self._pending += 1
        try:
            await self._slots.acquire()
        finally:
            self._pending -= 1
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise

        def release(_: concurrent.futures.Future[T]) -> None:
            # The slot is freed when the *thread* is done, not when the caller
            # stops waiting: a cancelled login must not let work pile up.
            with contextlib.suppress(RuntimeError):  # the loop closed first (shutdown)
                loop.call_soon_threadsafe(self._slots.release)

        future.add_done_callback(release)
        return await asyncio.wrap_future(future, loop=loop)
