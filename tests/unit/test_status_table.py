"""Every domain error maps to a distinct, deliberate gRPC code."""

from __future__ import annotations

import grpc

from cortex_core import errors
from cortex_core.api import status


def _leaf_errors() -> list[type[errors.CortexError]]:
    return errors.CortexError.__subclasses__()


def test_no_domain_error_falls_through_to_internal_or_unknown() -> None:
    for error_type in _leaf_errors():
        code = status.code_for(error_type("x"))
        assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), error_type


def test_each_domain_error_has_its_own_code() -> None:
    codes = [status.code_for(error_type("x")) for error_type in _leaf_errors()]
    assert len(codes) == len(set(codes))
