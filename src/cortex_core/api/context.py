"""Per-call values that handlers read: the authenticated caller and client info."""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Sequence
from typing import Any, TypeAlias

import grpc.aio

from cortex_core.domain.identity import Caller, ClientInfo

# What every servicer method receives; requests and responses are typed by each method.
ServicerContext: TypeAlias = grpc.aio.ServicerContext[Any, Any]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

caller_var: contextvars.ContextVar[Caller] = contextvars.ContextVar("cortex_caller")
client_var: contextvars.ContextVar[ClientInfo] = contextvars.ContextVar("cortex_client")

_FORWARDED_FOR = "x-forwarded-for"
_USER_AGENT = "user-agent"


def current_caller() -> Caller:
    """The caller of the RPC being handled (set by the interceptor's auth step)."""
    return caller_var.get()


def client_info(context: ServicerContext) -> ClientInfo:
    """Where the call came from: what the interceptor resolved for it (see
    :func:`resolve_client`), else the peer address (without port) and user agent."""
    found = client_var.get(None)
    return found if found is not None else resolve_client(context, ())


def peer_address(peer: str) -> str:
    """The IP of a grpc peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``), no port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return rest or peer


def resolve_client(context: Any, trusted_proxies: Sequence[IPNetwork]) -> ClientInfo:
    """The client's address and user agent.

    The address is the connection's peer, unless that peer is one of
    ``trusted_proxies``: then ``x-forwarded-for`` is read from the right (each
    proxy appends the address it saw), skipping trusted proxies, and the first
    address that is not one is the client. A malformed entry ends the walk (the
    last good address is kept), so a client cannot smuggle one in before it.
    """
    address = peer_address(context.peer() or "")
    agent = ""
    forwarded: list[str] = []
    for key, value in context.invocation_metadata() or ():
        if key == _USER_AGENT and isinstance(value, str) and not agent:
            agent = value
        elif key == _FORWARDED_FOR and isinstance(value, str):
            forwarded.extend(part.strip() for part in value.split(","))
    if trusted_proxies and forwarded and _is_trusted(address, trusted_proxies):
        for entry in reversed(forwarded):
            try:
                hop = ipaddress.ip_address(entry)
            except ValueError:
                break
            address = str(hop)
            if not _is_trusted(address, trusted_proxies):
                break
    return ClientInfo(address=address, user_agent=agent)


def _is_trusted(address: str, trusted_proxies: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted_proxies)
