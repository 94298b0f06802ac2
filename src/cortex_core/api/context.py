"""Per-call values that handlers read: the authenticated caller and client info."""

from __future__ import annotations

import contextvars
from typing import Any

from cortex_core.domain.identity import Caller, ClientInfo

caller_var: contextvars.ContextVar[Caller] = contextvars.ContextVar("cortex_caller")


def current_caller() -> Caller:
    """The caller of the RPC being handled (set by the interceptor's auth step)."""
    return caller_var.get()


def client_info(context: Any) -> ClientInfo:
    """The peer address (without port) and user agent of the call."""
    peer: str = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        address = rest.rpartition(":")[0]
    elif kind == "ipv6":
        address = rest.rpartition(":")[0].strip("[]")
    else:
        address = rest or peer
    agent = ""
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent" and isinstance(value, str):
            agent = value
            break
    return ClientInfo(address=address, user_agent=agent)
