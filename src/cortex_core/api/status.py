"""The one table from domain errors to gRPC status codes.

Both unary and streaming calls go through :func:`to_rpc_status`, so a domain
error raised mid-stream reaches the client with the same code and details as
one raised by a unary handler. Every status carries a ``google.rpc.ErrorInfo``
with domain ``cortex``; field validation adds ``google.rpc.BadRequest``;
throttling adds ``google.rpc.RetryInfo``, and every ``UNAVAILABLE`` carries one
(:data:`DEFAULT_UNAVAILABLE_RETRY` when the error names no delay).

Details stay small whatever the input: at most :data:`MAX_VIOLATIONS` field
violations, and every message, field path, description and metadata value is
cut to :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import collections

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from cortex_core import errors
from cortex_core.api.convert import duration

ERROR_DOMAIN = "cortex"

# Most specific first: the first matching class wins.
_CODES: tuple[tuple[type[errors.CortexError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.CortexError, grpc.StatusCode.INTERNAL),
)

INTERNAL_MESSAGE = "internal error"
RESUME_HEADER = "cortex-resume-token"
MAX_VIOLATIONS = 10
MAX_TEXT = 256
#: Seconds a client should wait before retrying an UNAVAILABLE that names no delay.
DEFAULT_UNAVAILABLE_RETRY = 1.0


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


class _Status(
    collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status
):
    """A status with extra trailing metadata beside ``grpc-status-details-bin``."""


def code_for(error: errors.CortexError) -> grpc.StatusCode:
    """Return the gRPC code for a domain error (INTERNAL for an unknown subclass)."""
    for error_type, code in _CODES:
        if isinstance(error, error_type):
            return code
    return grpc.StatusCode.INTERNAL


def to_rpc_status(error: errors.CortexError) -> grpc.Status:
    """Build the status (code, message, rich details) a client receives for ``error``."""
    code = code_for(error)
    metadata = {_cut(key): _cut(value) for key, value in error.metadata.items()}
    if "resume_token" in error.metadata:
        metadata["resume_token"] = error.metadata["resume_token"]  # the server's own, whole
    details = [
        _pack(
            error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
        )
    ]
    if isinstance(error, errors.InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_cut(v.field), description=_cut(v.description), reason=v.reason
                        )
                        for v in error.violations[:MAX_VIOLATIONS]
                    ]
                )
            )
        )
    retry_after = (
        error.retry_after
        if isinstance(error, errors.ResourceExhausted | errors.Unavailable)
        else None
    )
    if retry_after is None and isinstance(error, errors.Unavailable):
        retry_after = DEFAULT_UNAVAILABLE_RETRY
    if retry_after is not None:
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=duration(retry_after))))
    rpc = status_from_parts(code, _cut(error.message), details)
    resume = error.metadata.get("resume_token")
    if resume:
        # Also as plain trailing metadata, so a client can resume without
        # decoding google.rpc.Status.
        rpc = _Status(rpc.code, rpc.details, (*rpc.trailing_metadata, (RESUME_HEADER, resume)))
    return rpc


def to_status_proto(error: errors.CortexError) -> status_pb2.Status:
    """``error`` as a ``google.rpc.Status`` message (for errors reported inside a
    response, such as a reply's completion frame)."""
    rpc = to_rpc_status(error)
    for key, value in rpc.trailing_metadata:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=_CODE_NUMBERS[rpc.code], message=error.message)


def internal_status(request_id: str) -> grpc.Status:
    """The status for an unexpected exception: generic text, no stack, no class name."""
    info = error_details_pb2.ErrorInfo(
        reason="INTERNAL", domain=ERROR_DOMAIN, metadata={"request_id": request_id}
    )
    return status_from_parts(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, [_pack(info)])


def unimplemented_status(method: str) -> grpc.Status:
    """The status for an RPC that is in the contract but not built yet."""
    info = error_details_pb2.ErrorInfo(
        reason="NOT_IMPLEMENTED", domain=ERROR_DOMAIN, metadata={"method": method}
    )
    message = f"{method} is not implemented yet"
    return status_from_parts(grpc.StatusCode.UNIMPLEMENTED, message, [_pack(info)])


def status_from_parts(
    code: grpc.StatusCode, message: str, details: list[any_pb2.Any]
) -> grpc.Status:
    proto = status_pb2.Status(code=_CODE_NUMBERS[code], message=message, details=details)
    return rpc_status.to_status(proto)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


_CODE_NUMBERS: dict[grpc.StatusCode, int] = {
    code: getattr(code_pb2, code.name) for code in grpc.StatusCode
}
