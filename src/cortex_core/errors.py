"""The error tree every layer raises; ``api.status`` maps it to gRPC codes.

Errors carry a machine-readable ``reason`` (UPPER_SNAKE_CASE, sent to clients as
``google.rpc.ErrorInfo.reason`` with domain ``cortex``) and a human message that
is safe to show to a caller. They never carry a transport status code::

    CortexError
    ├── InvalidArgument        bad input; carries FieldViolations
    ├── NotFound               absent, or belongs to another tenant
    ├── AlreadyExists
    ├── FailedPrecondition     the resource is not in a state that allows this
    ├── PermissionDenied       authenticated, but the role does not allow it
    ├── Unauthenticated        no, bad, expired or revoked credentials
    ├── ResourceExhausted      throttled or over a quota; carries retry_after
    ├── Aborted                a concurrent change won; retry may succeed
    │   └── ToolFailed         a tool ran and reported an error (InvokeTool returns it in
    │                          the response's `error`; replies hand it to the model)
    ├── DeadlineExceeded       the work outlived its deadline or its own timeout
    └── Unavailable            a dependency (database, Redis, provider, MCP server) is down
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: ``field`` is its proto path (``user.email``)."""

    field: str
    description: str
    reason: str = "INVALID_FIELD"


class CortexError(Exception):
    """Base of every error that is allowed to reach a caller (the base class itself
    is sent as ``INTERNAL``)."""

    default_reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(CortexError):
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        violations: tuple[FieldViolation, ...] | list[FieldViolation] = (),
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = tuple(violations)


class NotFound(CortexError):
    default_reason = "NOT_FOUND"


class AlreadyExists(CortexError):
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(CortexError):
    default_reason = "FAILED_PRECONDITION"


class PermissionDenied(CortexError):
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(CortexError):
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(CortexError):
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after


class Aborted(CortexError):
    default_reason = "ABORTED"


class Unavailable(CortexError):
    """A dependency is down; ``retry_after`` (seconds), when known, says when to retry."""

    default_reason = "UNAVAILABLE"
    retry_after: float | None = None


class DeadlineExceeded(CortexError):
    default_reason = "DEADLINE_EXCEEDED"


class ToolFailed(Aborted):
    """A tool ran and reported a failure (an Aborted: the work was attempted and
    did not complete; where it is an RPC's error rather than a result it is sent as
    ABORTED). ``code`` is the tool's own error code
    (kept in ``metadata["code"]``); ``message`` is what the tool said, trimmed, never
    a stack trace."""

    default_reason = "TOOL_FAILED"
