"""Helpers for reading rich gRPC errors in tests."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def details(error: grpc.RpcError) -> dict[str, Any]:
    """Unpack ``google.rpc.Status`` details by type name (ErrorInfo, BadRequest, …)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return {}
    unpacked: dict[str, Any] = {}
    for any_detail in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if any_detail.Is(kind.DESCRIPTOR):
                message = kind()
                any_detail.Unpack(message)
                unpacked[kind.__name__] = message
    return unpacked
