"""The tools conversation agents may call, and the handoff tools built from the team.

Information tools run in the worker while the call's result is saved (they only read): `current_time`,
`search_conversation` (this conversation's messages, full-text) and `search_references` (the project's
reference documents, through the shared retriever `orchestration.retrieval`). Handoff tools
(`transfer_to_<agent>`) move the conversation to a teammate; agent-as-tool calls (`ask_<agent>`) ask a
specialist and keep the conversation.
Tool names follow both APIs' rule ^[a-zA-Z0-9_-]{1,64}$.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

TRANSFER_PREFIX = "transfer_to_"
ASK_PREFIX = "ask_"
RESULT_CHARS = 4000  # a tool result is cut to this before it goes back to the model
PASSAGE_CHARS = 600

CURRENT_TIME = {
    "name": "current_time",
    "description": "The current date and time (UTC). Use it for anything that depends on today's date.",
    "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
}
SEARCH_CONVERSATION = {
    "name": "search_conversation",
    "description": "Full-text search of this conversation's earlier messages. Returns matching excerpts.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "Words to look for."}},
        "required": ["query"],
        "additionalProperties": False,
    },
}
SEARCH_REFERENCES = {
    "name": "search_references",
    "description": "Search the project's reference documents. Returns passages with the reference they come from.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "What to look for."}},
        "required": ["query"],
        "additionalProperties": False,
    },
}
INFO_TOOLS = [CURRENT_TIME, SEARCH_CONVERSATION, SEARCH_REFERENCES]
INFO_TOOL_NAMES = frozenset(t["name"] for t in INFO_TOOLS)
# What the team page offers per agent: (tool name, what the writer reads).
INFO_TOOL_CHOICES = [
    ("current_time", "Current time"),
    ("search_conversation", "Search this conversation"),
    ("search_references", "Search the project's references"),
]


def may_use(agent: Any, name: str) -> bool:
    """Whether `agent` may run the information tool `name` (a model calling a tool it was not offered
    gets "There is no tool called ..." instead of its result)."""
    allowed = getattr(agent, "tools", None)
    return allowed is None or name in allowed


def info_tools_for(agent: Any) -> list[dict[str, Any]]:
    """The information tools `agent` (an orchestration Agent) may call: those named in `agent.tools`,
    or all of them when it is None (the presets' default). Unknown names are ignored."""
    allowed = getattr(agent, "tools", None)
    if allowed is None:
        return list(INFO_TOOLS)
    return [t for t in INFO_TOOLS if t["name"] in allowed]


def transfer_tool(key: str, name: str, description: str) -> dict[str, Any]:
    return {
        "name": f"{TRANSFER_PREFIX}{key}",
        "description": f"Hand the conversation to {name}: {description} Say why in one short line.",
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "Why, in a few words the writer will see."}},
            "required": ["reason"],
            "additionalProperties": False,
        },
    }


def ask_tool(key: str, name: str, description: str) -> dict[str, Any]:
    return {
        "name": f"{ASK_PREFIX}{key}",
        "description": f"Ask {name} a question and get its answer back, keeping the conversation. {description}",
        "parameters": {
            "type": "object",
            "properties": {"question": {"type": "string", "description": "The question, self-contained."}},
            "required": ["question"],
            "additionalProperties": False,
        },
    }


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


def search_references(*, project_id: int, query: str, limit: int = 3) -> list[Passage]:
    """The `limit` passages of the project's reference documents that best match `query` (the shared
    retriever, orchestration.retrieval: FTS5 / PostgreSQL full-text search over chunked passages)."""
    from orchestration import retrieval

    return [
        Passage(hit.reference_title, " ".join(hit.text.split())[:PASSAGE_CHARS])
        for hit in retrieval.search(query, project=project_id, k=limit)
    ]


def run_info_tool(name: str, arguments: dict[str, Any], *, conversation_id: int, project_id: int) -> str:
    """Run an information tool; returns its result as text for the model (and the transcript)."""
    from orchestration.conversations.search import search_messages, snippet

    query = str(arguments.get("query") or "").strip()[:200]
    if name == "current_time":
        now = timezone.now()
        return now.strftime("%A %d %B %Y, %H:%M UTC (ISO %Y-%m-%dT%H:%M:%SZ)")
    if name == "search_conversation":
        if not query:
            return "No query was given."
        found = search_messages(conversation_id=conversation_id, query=query, limit=5)
        if not found:
            return f"No earlier message mentions “{query}”."
        lines = [f"- {m.agent_name or 'Writer'}: {snippet(m.content, query)}" for m in found]
        return "\n".join(lines)[:RESULT_CHARS]
    if name == "search_references":
        if not query:
            return "No query was given."
        passages = search_references(project_id=project_id, query=query)
        if not passages:
            return f"The project's references say nothing about “{query}”."
        return "\n\n".join(f"[{p.title}] {p.text}" for p in passages)[:RESULT_CHARS]
    return f"There is no tool called {name}."
