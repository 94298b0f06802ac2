"""AIP-122 resource names: the one place that spells them.

Each pattern has one ``{}`` per id, outermost first. The functions below fill
them (entities' ``name`` properties and the api's converters use them); the api
splits a client's name with the same pattern (``api.convert.parse_name``), so a
name is written and read by one definition.
"""

from __future__ import annotations

USER = "users/{}"
SESSION = "users/{}/sessions/{}"
WORKSPACE = "workspaces/{}"
MEMBER = "workspaces/{}/members/{}"
CONVERSATION = "workspaces/{}/conversations/{}"
MESSAGE = "workspaces/{}/conversations/{}/messages/{}"
SUMMARY = "workspaces/{}/conversations/{}/summaries/{}"
MEMORY = "workspaces/{}/memories/{}"
TOOL = "tools/{}"


def user_name(user_id: str) -> str:
    return USER.format(user_id)


def session_name(user_id: str, session_id: str) -> str:
    return SESSION.format(user_id, session_id)


def workspace_name(workspace_id: str) -> str:
    return WORKSPACE.format(workspace_id)


def member_name(workspace_id: str, user_id: str) -> str:
    return MEMBER.format(workspace_id, user_id)


def conversation_name(workspace_id: str, conversation_id: str) -> str:
    return CONVERSATION.format(workspace_id, conversation_id)


def message_name(workspace_id: str, conversation_id: str, message_id: str) -> str:
    return MESSAGE.format(workspace_id, conversation_id, message_id)


def summary_name(workspace_id: str, conversation_id: str, summary_id: str) -> str:
    return SUMMARY.format(workspace_id, conversation_id, summary_id)


def memory_name(workspace_id: str, memory_id: str) -> str:
    return MEMORY.format(workspace_id, memory_id)


def tool_name(tool_id: str) -> str:
    return TOOL.format(tool_id)
