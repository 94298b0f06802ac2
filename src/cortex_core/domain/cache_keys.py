"""Keys of the hot-read :class:`~cortex_core.ports.Cache`, in one place.

Context windows are cached per conversation under a workspace prefix, so a
change that affects one conversation (a new message, a summary) drops that
conversation's windows, and a change that affects every conversation of a
workspace (a memory created, deleted or expired) drops all of them::

    ctx:<workspace id>:<conversation id>:<anything the caller needs, e.g. budget>
"""

from __future__ import annotations


def context_window_key(workspace_id: str, conversation_id: str, variant: str = "") -> str:
    """Key of one cached context window (``variant`` tells apart e.g. token budgets)."""
    return f"{conversation_context_prefix(workspace_id, conversation_id)}{variant}"


def conversation_context_prefix(workspace_id: str, conversation_id: str) -> str:
    """Prefix of every cached window of a conversation: ``delete_prefix`` it on writes."""
    return f"ctx:{workspace_id}:{conversation_id}:"


def workspace_context_prefix(workspace_id: str) -> str:
    """Prefix of every cached window in a workspace: ``delete_prefix`` it on memory writes."""
    return f"ctx:{workspace_id}:"
