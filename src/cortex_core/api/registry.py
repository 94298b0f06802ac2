"""Every Cortex service in the contracts, and the servicer that answers it.

A service without an implementation yet is served by its generated base
servicer, which answers each RPC with ``UNIMPLEMENTED``; it is still listed by
reflection and has its own health status.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from types import ModuleType

import grpc.aio

# The versioned packages whose ``*_service.proto`` files define services.
PACKAGES: tuple[str, ...] = (
    "cortex.auth.v1",
    "cortex.sessions.v1",
    "cortex.context.v1",
    "cortex.events.v1",
    "cortex.experts.v1",
)


@functools.cache
def _modules() -> list[tuple[ModuleType, ModuleType]]:
    """(``_pb2``, ``_pb2_grpc``) of every generated ``*_service.proto``, sorted by name."""
    pairs = []
    for package in PACKAGES:
        path = importlib.import_module(package).__path__
        for info in sorted(pkgutil.iter_modules(path), key=lambda m: m.name):
            if info.name.endswith("_service_pb2"):
                pairs.append(
                    (
                        importlib.import_module(f"{package}.{info.name}"),
                        importlib.import_module(f"{package}.{info.name}_grpc"),
                    )
                )
    return pairs


def service_names() -> list[str]:
    """Full names of every Cortex service (``cortex.auth.v1.AuthService`` …)."""
    return [
        service.full_name
        for pb2, _ in _modules()
        for service in pb2.DESCRIPTOR.services_by_name.values()
    ]


def register_services(server: grpc.aio.Server, implementations: Mapping[str, object]) -> list[str]:
    """Add every Cortex service to ``server``; return their full names.

    ``implementations`` maps a full service name to its servicer; services not
    in it get the generated base servicer (``UNIMPLEMENTED``).
    """
    names: list[str] = []
    for pb2, pb2_grpc in _modules():
        for short_name, service in pb2.DESCRIPTOR.services_by_name.items():
            servicer = implementations.get(service.full_name)
            if servicer is None:
                servicer = getattr(pb2_grpc, f"{short_name}Servicer")()
            getattr(pb2_grpc, f"add_{short_name}Servicer_to_server")(servicer, server)
            names.append(service.full_name)
    unknown = set(implementations) - set(names)
    if unknown:
        raise ValueError(f"implementations for unknown services: {sorted(unknown)}")
    return names
