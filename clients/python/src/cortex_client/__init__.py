"""Helpers for the Cortex Core API over the generated ``cortex.*`` grpcio stubs.

- ``CortexClient`` / ``TokenAuth``: attach the access token to every call and refresh it
  with the rotating refresh token (before expiry, and once after UNAUTHENTICATED).
- ``CortexError`` (and one subclass per code): a failed call with its ErrorInfo reason and
  metadata, BadRequest violations and RetryInfo delay; ``rich_errors()`` raises them.
- ``EventSubscription``: SubscribeEvents that reconnects from its resume token and yields
  each event once; ``watch_task``: WatchTask that resumes by ``after_sequence``.
"""

from cortex_client.auth import TokenAuth, Tokens
from cortex_client.backoff import Backoff
from cortex_client.client import CortexClient
from cortex_client.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    CortexError,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    rich_errors,
)
from cortex_client.streams import EventSubscription, watch_task

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Backoff",
    "Cancelled",
    "CortexClient",
    "CortexError",
    "DeadlineExceeded",
    "EventSubscription",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TokenAuth",
    "Tokens",
    "Unauthenticated",
    "Unavailable",
    "rich_errors",
    "watch_task",
]
