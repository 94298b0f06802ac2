"""The one table from database driver exceptions to :mod:`cortex_core.errors`.

Most specific first::

    IntegrityError, unique violation         AlreadyExists
    IntegrityError, other                     FailedPrecondition  REFERENCE_MISSING
    PostgreSQL class 22 (data exception:
      NUL or untranslatable character,
      value out of range), text that
      cannot be encoded                       InvalidArgument     UNSUPPORTED_VALUE
    pool wait timed out, SQLite "database
      is locked", PostgreSQL lock/statement
      timeout or too many connections         Unavailable         DATABASE_BUSY (retry 1 s)
    refused, dropped, invalidated, timed out  Unavailable         DATABASE_UNAVAILABLE (retry 5 s)

Anything else is re-raised unchanged (a bug: the api reports it as INTERNAL).
Every ``Unavailable`` carries ``retry_after`` so clients get a RetryInfo.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc

from cortex_core import errors

BUSY_RETRY_AFTER_SECONDS = 1.0
UNAVAILABLE_RETRY_AFTER_SECONDS = 5.0

# PostgreSQL SQLSTATEs meaning "up, but too busy right now".
_BUSY_SQLSTATES = frozenset(
    {
        "55P03",  # lock_not_available
        "57014",  # query_canceled (statement timeout)
        "53300",  # too_many_connections
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
    }
)
_SQLITE_BUSY = ("database is locked", "database table is locked")


@contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise driver exceptions as domain errors (see the module's table)."""
    try:
        yield
    except exc.IntegrityError as error:
        if _sqlstate(error) == "23505" or "UNIQUE constraint failed" in str(error.orig):
            raise errors.AlreadyExists("the resource already exists") from error
        raise errors.FailedPrecondition(
            "the change refers to a resource that does not exist", reason="REFERENCE_MISSING"
        ) from error
    except exc.TimeoutError as error:  # waited pool_timeout for a pooled connection
        raise database_busy() from error
    except exc.DBAPIError as error:
        sqlstate = _sqlstate(error)
        if sqlstate.startswith("22") or isinstance(error.orig, UnicodeError):
            raise unsupported_value() from error
        if sqlstate in _BUSY_SQLSTATES or any(text in str(error.orig) for text in _SQLITE_BUSY):
            raise database_busy() from error
        if error.connection_invalidated or isinstance(
            error, exc.OperationalError | exc.InterfaceError
        ):
            raise database_unavailable() from error
        raise
    except UnicodeEncodeError as error:  # SQLite: text the driver cannot encode
        raise unsupported_value() from error
    except (OSError, TimeoutError) as error:
        raise database_unavailable() from error


def _sqlstate(error: exc.DBAPIError) -> str:
    return str(getattr(error.orig, "sqlstate", None) or "")  # asyncpg has one, sqlite not


def database_busy() -> errors.Unavailable:
    """Up, but every pooled connection or the write lock stayed taken too long."""
    error = errors.Unavailable("the database is busy; retry shortly", reason="DATABASE_BUSY")
    error.retry_after = BUSY_RETRY_AFTER_SECONDS
    return error


def database_unavailable() -> errors.Unavailable:
    error = errors.Unavailable(
        "the database is unavailable; retry later", reason="DATABASE_UNAVAILABLE"
    )
    error.retry_after = UNAVAILABLE_RETRY_AFTER_SECONDS
    return error


def unsupported_value() -> errors.InvalidArgument:
    return errors.InvalidArgument(
        "the request contains text or a value the database cannot store"
        " (for example a NUL character)",
        reason="UNSUPPORTED_VALUE",
    )
