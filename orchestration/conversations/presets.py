"""The shipped conversation teams: "Writing desk" (a triage agent and three specialists) and "Pipeline desk"
(researcher, planner, builder and reviewer: each message runs research -> plan -> build -> review).

Agents are ordinary `Agent` rows on the conversation's session (role "triage" or "specialist"), so they
are configured like any agent (model, fallback, prompt, max output tokens). Shipped on the Demo model,
so a newcomer can try it without keys; a user's default model wins, as with session presets.
"""

from __future__ import annotations

from typing import Any

TRIAGE = "triage"
SPECIALIST = "specialist"

TRIAGE_PROMPT = """You are the triage agent of a writing desk. You talk with the writer.
Answer simple questions yourself, briefly. When a request needs a specialist's skill, hand the
conversation to that specialist with a one-line reason the writer will see. You may also ask a
specialist for a quick answer as a tool and keep the conversation yourself."""

RESEARCH_PROMPT = """You are the research specialist of a writing desk.
Find what the writer needs to know, grounded in the project's references (search them) and say plainly
what the references do not cover. Quote short passages and name the reference they come from.
When the writer's need is no longer research, hand the conversation back to triage."""

EDITING_PROMPT = """You are the editing specialist of a writing desk.
Improve the writer's text: clarity, structure, tone, concision. Show the revised passage, then list the
main changes in a few bullets. Keep the writer's voice. Hand back to triage when the edit is done and
the writer moves on to something else."""

FACT_CHECK_PROMPT = """You are the fact-check specialist of a writing desk.
Check each factual claim the writer gives you against the project's references (search them): say for
each whether the references support it, contradict it, or do not cover it, quoting the evidence.
Never invent sources. Hand back to triage when the check is done."""

WRITING_DESK: dict[str, Any] = {
    "slug": "writing-desk",
    "flow": "triage",
    "name": "Writing desk",
    "description": "A triage agent that answers or hands you to research, editing and fact-check specialists.",
    "agents": [
        {"name": "Triage", "role": TRIAGE, "prompt": TRIAGE_PROMPT, "description": "Routes the conversation."},
        {
            "name": "Research specialist",
            "role": SPECIALIST,
            "prompt": RESEARCH_PROMPT,
            "description": "Finds sources and background in the project's references.",
        },
        {
            "name": "Editing specialist",
            "role": SPECIALIST,
            "prompt": EDITING_PROMPT,
            "description": "Rewrites and tightens the writer's text.",
        },
        {
            "name": "Fact-check specialist",
            "role": SPECIALIST,
            "prompt": FACT_CHECK_PROMPT,
            "description": "Checks claims against the project's references.",
        },
    ],
}


def _pipeline_agents() -> list[dict[str, Any]]:
    """The session pipeline's shipped team ("Researched article": its role prompts and rubrics), reused so
    the chat's stages are prompted and scored exactly like a session's."""
    from orchestration.presets import SHIPPED_PRESETS

    article = next(p for p in SHIPPED_PRESETS if p["slug"] == "researched-article")
    return [
        {
            "name": agent["name"],
            "role": agent["role"],
            "prompt": agent["role_prompt"],
            "temperature": agent["temperature"],
            "criteria": agent["criteria"],
            "description": agent["role_prompt"].split(".")[0] + ".",
        }
        for agent in article["data"]["agents"]
    ]


PIPELINE_DESK: dict[str, Any] = {
    "slug": "pipeline-desk",
    "flow": "pipeline",
    "name": "Pipeline desk",
    "description": (
        "Each message is researched in your project's references, planned, built into an answer with citations "
        "and reviewed (the reviewer's edits are applied) before it becomes the reply."
    ),
    "agents": _pipeline_agents,  # a callable: the session presets module is imported when it is needed
}
CONVERSATION_PRESETS = {WRITING_DESK["slug"]: WRITING_DESK, PIPELINE_DESK["slug"]: PIPELINE_DESK}
PRESET_FOR_FLOW = {"triage": WRITING_DESK["slug"], "pipeline": PIPELINE_DESK["slug"]}


def preset_agents(preset: dict[str, Any]) -> list[dict[str, Any]]:
    """The agents of a conversation preset: [{name, role, prompt, temperature?, criteria?, description}]."""
    agents = preset["agents"]
    found: list[dict[str, Any]] = agents() if callable(agents) else agents
    return found


DATA_PROMPT = """You are the data specialist of a writing desk.
Work with the numbers, tables and figures the writer brings: check the arithmetic, summarise what the
data shows and what it cannot show, and suggest a clear table or chart. Never invent figures.
Hand back to triage when the writer moves on from the data."""

CODE_PROMPT = """You are the code specialist of a writing desk.
Help with code the writer's text includes or needs: explain it, fix it, or write a short example, in a
fenced code block with the language named. Keep examples minimal and say what you did not test.
Hand back to triage when the writer moves on from the code."""

BLANK_PROMPT = """You are a specialist of a writing desk.
Describe here what this specialist does, in one sentence: triage reads it to decide when to hand over."""

# What the team page's "Add a specialist" offers: kind -> name and role prompt (a blank one to write).
SPECIALIST_KINDS: dict[str, dict[str, str]] = {
    "blank": {"label": "Blank (write its prompt)", "name": "Specialist", "prompt": BLANK_PROMPT},
    "research": {"label": "Research", "name": "Research specialist", "prompt": RESEARCH_PROMPT},
    "editing": {"label": "Editing", "name": "Editing specialist", "prompt": EDITING_PROMPT},
    "data": {"label": "Data", "name": "Data specialist", "prompt": DATA_PROMPT},
    "code": {"label": "Code", "name": "Code specialist", "prompt": CODE_PROMPT},
    "fact-check": {"label": "Fact-check", "name": "Fact-check specialist", "prompt": FACT_CHECK_PROMPT},
}
