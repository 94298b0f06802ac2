"""Typed errors for failed Cortex calls, with the rich ``google.rpc.Status`` details.

Every failure Cortex sends carries a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer (docs/contracts.md, "Error model"). ``CortexError``
unpacks it once so callers read ``error.reason``, ``error.violations`` and
``error.retry_delay`` instead of parsing trailers:

    CortexError                 any failed call (``code``, ``reason``, ``metadata`` ...)
    ├── InvalidArgument         INVALID_ARGUMENT, with ``violations`` from BadRequest
    ├── Unauthenticated         UNAUTHENTICATED (token missing, expired, revoked ...)
    ├── PermissionDenied        PERMISSION_DENIED
    ├── NotFound                NOT_FOUND
    ├── AlreadyExists           ALREADY_EXISTS
    ├── FailedPrecondition      FAILED_PRECONDITION
    ├── Aborted                 ABORTED
    ├── ResourceExhausted       RESOURCE_EXHAUSTED (``retry_delay`` from RetryInfo)
    ├── Unavailable             UNAVAILABLE (``retry_delay`` from RetryInfo)
    ├── DeadlineExceeded        DEADLINE_EXCEEDED
    └── Cancelled               CANCELLED (the caller's own cancellation)

Other codes (INTERNAL, UNIMPLEMENTED ...) are plain ``CortexError``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "cortex"
_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    """One offending request field: ``field`` is the proto path (``workspace.display_name``)."""

    field: str
    description: str
    reason: str


class CortexError(Exception):
    """A failed call. ``status`` is the full ``google.rpc.Status`` (None when the failure
    came from the transport, e.g. a refused connection, rather than from a Cortex server).
    The ``grpc.RpcError`` it came from is its ``__cause__`` when ``rich_errors()`` raised it.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status: status_pb2.Status | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        violations: tuple[FieldViolation, ...] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(
            f"{code.name} ({reason}): {message}" if reason else f"{code.name}: {message}"
        )
        self.code = code
        self.message = message
        self.status = status
        self.reason = reason
        self.domain = domain
        self.metadata: Mapping[str, str] = dict(metadata or {})
        self.violations = violations
        self.retry_delay = retry_delay

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> CortexError:
        """The typed error for a failed call (``grpc.aio.AioRpcError`` or a sync ``grpc.Call``)."""
        call: Any = error  # an RpcError is also the failed call (code, details, trailers)
        code: grpc.StatusCode = call.code()
        message: str = call.details() or ""
        status = _rich_status(error)
        if status is None:
            return _BY_CODE.get(code, CortexError)(code, message)
        return cls._parsed(code, message, status)

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> CortexError:
        """The typed error a ``google.rpc.Status`` carried as a result rather than raised:
        ``ReplyCompletion.error``, ``Task.error``, ``ToolResult.error``,
        ``InvokeToolResponse.error``."""
        code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
        return cls._parsed(code, status.message, status)

    @staticmethod
    def _parsed(code: grpc.StatusCode, message: str, status: status_pb2.Status) -> CortexError:
        reason, domain, metadata = "", "", {}
        violations: list[FieldViolation] = []
        retry_delay = None
        details: Any = status.details
        for detail in details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations += [
                    FieldViolation(v.field, v.description, v.reason) for v in bad.field_violations
                ]
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToTimedelta().total_seconds()
        return _BY_CODE.get(code, CortexError)(
            code,
            message,
            status=status,
            reason=reason,
            domain=domain,
            metadata=metadata,
            violations=tuple(violations),
            retry_delay=retry_delay,
        )

    def describe(self) -> str:
        """``CODE (REASON): message``, then one indented line per field violation."""
        lines = [str(self)]
        for v in self.violations:
            lines.append(f"  {v.field}: {v.description}" + (f" ({v.reason})" if v.reason else ""))
        return "\n".join(lines)


class InvalidArgument(CortexError):
    """INVALID_ARGUMENT; ``violations`` names each offending field."""


class Unauthenticated(CortexError):
    """UNAUTHENTICATED: sign in again unless a refresh can fix it (``TokenAuth`` tries once)."""


class PermissionDenied(CortexError):
    """PERMISSION_DENIED."""


class NotFound(CortexError):
    """NOT_FOUND (also for a resource outside the caller's workspaces)."""


class AlreadyExists(CortexError):
    """ALREADY_EXISTS."""


class FailedPrecondition(CortexError):
    """FAILED_PRECONDITION."""


class Aborted(CortexError):
    """ABORTED."""


class ResourceExhausted(CortexError):
    """RESOURCE_EXHAUSTED; ``retry_delay`` says when to try again, when it can succeed."""


class Unavailable(CortexError):
    """UNAVAILABLE; ``retry_delay`` says when to try again."""


class DeadlineExceeded(CortexError):
    """DEADLINE_EXCEEDED."""


class Cancelled(CortexError):
    """CANCELLED: the call was cancelled by its caller."""


_BY_CODE: dict[grpc.StatusCode, type[CortexError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
}


_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    try:
        # grpcio-status checks that the trailer's code and message match the call's.
        found: status_pb2.Status | None = rpc_status.from_call(error)  # type: ignore[arg-type]
        return found
    except ValueError:
        pass
    # A Status whose message differs from the call's (a proxy rewrote it) is still the
    # server's: read the trailer directly rather than lose the details.
    call: Any = error
    trailers: Any = call.trailing_metadata() or ()
    for key, value in trailers:
        if key == _DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


@contextlib.contextmanager
def rich_errors() -> Iterator[None]:
    """Re-raise any ``grpc.RpcError`` inside the block as its typed ``CortexError``.

    Works around ``await`` too: ``with rich_errors(): await stub.GetTask(...)``.
    """
    try:
        yield
    except grpc.RpcError as error:
        raise CortexError.from_rpc_error(error) from error
