"""The offline Demo provider's conversation answers: honest, deterministic, labelled as not a language model.

It reads the same request a model gets (the transcript, the tools offered, who is asking) and decides by
fixed rules, so a newcomer without keys sees triage, handoffs, hand-backs and tool calls work:

* **Triage** hands the conversation to the specialist whose words the message uses (sources / research ->
  the research specialist; edit / rewrite / shorten -> editing; fact / check / true -> fact-check), with the
  matched words as the reason; asked the time, it calls `current_time`; otherwise it answers itself and
  says what the desk can do. Once the handoff limit is reached (no transfer tools offered) it answers.
* **Research** and **fact-check** specialists call `search_references`, then quote what the project's
  references say (or say they say nothing); fact-check marks each claim supported or not covered.
* The **editing** specialist tightens the text it is given (filler words out) and lists the changes.
* **Data** (data / numbers / table ...) and **code** (code / script / bug ...) specialists, added on the
  team page, are handed their messages the same way and say plainly they are the demo.
* A specialist given a message outside its domain hands back to triage ("the writer moved on").
* Asked as a tool (`ask_<specialist>`), a specialist answers the question in one short paragraph.

A **pipeline** conversation's stages get the session pipeline's demo answers (providers/demo_pipeline.py:
findings quoted from the retrieved passages with their numbers, an outline from them, a draft, a review whose
edits quote the draft exactly); the draft, which becomes the reply, opens with the same honest label.
"""

from __future__ import annotations

import re
from typing import Any

from orchestration.providers.base import ModelRequest, ToolCall

LABEL = "*Demo (offline, not a language model).*"
DOMAINS = {
    "research": ("source", "sources", "research", "background", "evidence", "cite", "citation", "history", "find"),
    "editing": ("edit", "rewrite", "shorten", "tighten", "polish", "proofread", "grammar", "rephrase", "clearer"),
    "fact": ("fact", "check", "true", "accurate", "verify", "correct", "claim", "claims"),
    "data": ("data", "numbers", "figures", "statistics", "table", "chart", "spreadsheet", "percent", "average"),
    "code": ("code", "script", "function", "python", "javascript", "bug", "program", "snippet", "regex"),
}
TIME_WORDS = ("time", "date", "today", "day")
FILLERS = ("very ", "really ", "actually ", "basically ", "just ", "in order to ", "it is worth noting that ")
STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "of",
        "to",
        "in",
        "on",
        "for",
        "with",
        "is",
        "are",
        "was",
        "be",
        "it",
        "this",
        "that",
        "what",
        "can",
        "you",
        "me",
        "my",
        "please",
    ]
)


def _domain_of(text: str) -> str | None:
    words = set(re.findall(r"[a-z]+", text.lower()))
    best = max(DOMAINS, key=lambda d: len(words & set(DOMAINS[d])))
    return best if words & set(DOMAINS[best]) else None


def _own_domain(agent_name: str) -> str | None:
    name = agent_name.lower()
    return next((d for d in DOMAINS if d in name), None)


def _writer_text(messages: list[dict[str, Any]]) -> str:
    """The writer's latest message (context lines in brackets are the desk's own notes)."""
    for message in reversed(messages):
        content = str(message.get("content") or "")
        if message.get("role") == "user" and not content.startswith("["):
            return content
    return ""


def _tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") == "tool":
            results.insert(0, message)
        elif message.get("role") == "user" and not str(message.get("content") or "").startswith("["):
            break
    return results


def _keywords(text: str) -> str:
    words = [w for w in re.findall(r"[A-Za-z0-9']+", text) if w.lower() not in STOP and len(w) > 2]
    return " ".join(words[:6])


def _tool_named(tools: list[dict[str, Any]], prefix: str, domain: str | None = None) -> str | None:
    for tool in tools:
        name: str = tool["name"]
        if name.startswith(prefix) and (domain is None or domain in name):
            return name
    return None


def _call(name: str, arguments: dict[str, Any], n: int) -> ToolCall:
    return ToolCall(id=f"demo_call_{n}", name=name, arguments=arguments)


def _triage(request: ModelRequest, writer: str, results: list[dict[str, Any]]) -> tuple[str, list[ToolCall]]:
    domain = _domain_of(writer)
    target = _tool_named(request.tools, "transfer_to_", domain) if domain else None
    if domain and target and not results:
        matched = sorted(set(re.findall(r"[a-z]+", writer.lower())) & set(DOMAINS[domain]))
        return "", [_call(target, {"reason": f"you asked about {', '.join(matched)}"}, 1)]
    if any(w in writer.lower().split() for w in TIME_WORDS) and "current_time" in _names(request) and not results:
        return "", [_call("current_time", {}, 1)]
    if results:
        return f"{LABEL} The clock says: {results[-1].get('content')}.", []
    specialists = [
        t["name"].removeprefix("transfer_to_").replace("_", " ") for t in request.tools if "transfer" in t["name"]
    ]
    offer = f" I can hand you to: {', '.join(specialists)}." if specialists else ""
    return (
        f"{LABEL} I'm the triage desk. You wrote: “{writer[:200]}”. Ask for sources, an edit or a fact check "
        f"and I'll pass you to the right specialist.{offer}"
    ), []


def _names(request: ModelRequest) -> set[str]:
    return {t["name"] for t in request.tools}


def _search_answer(own: str, writer: str, results: list[dict[str, Any]]) -> str:
    found = str(results[-1].get("content") or "")
    if own == "research":
        return f"{LABEL} I searched the project's references for “{_keywords(writer)}”:\n\n{found}"
    claims = [c.strip() for c in re.split(r"(?<=[.!?])\s+", writer) if len(c.split()) > 2]
    lines = []
    for claim in claims[:5] or [writer]:
        words = {w for w in re.findall(r"[a-z]+", claim.lower()) if w not in STOP and len(w) > 3}
        hits = {w for w in words if w in found.lower()}
        verdict = "supported by the references" if words and len(hits) * 2 >= len(words) else "not covered"
        lines.append(f"- “{claim[:160]}”: {verdict}")
    return f"{LABEL} Checked against the project's references:\n\n" + "\n".join(lines) + f"\n\nEvidence:\n\n{found}"


def _edit(writer: str) -> str:
    quoted = re.findall(r"[“\"]([^”\"]{10,})[”\"]", writer)
    text = quoted[0] if quoted else writer.split(":", 1)[-1].strip()
    edited = text
    removed = []
    for filler in FILLERS:
        if filler in edited.lower():
            removed.append(filler.strip())
            edited = re.sub(re.escape(filler), "", edited, flags=re.I)
    edited = " ".join(edited.split())
    changes = f"Removed filler: {', '.join(removed)}." if removed else "No filler words found; the text is kept."
    return f"{LABEL} Tightened version:\n\n> {edited}\n\n- {changes}\n- A real model would also restructure."


def _specialist(
    request: ModelRequest, writer: str, results: list[dict[str, Any]], handed: bool
) -> tuple[str, list[ToolCall]]:
    own = _own_domain(str(request.metadata.get("agent_name") or ""))
    back = _tool_named(request.tools, "transfer_to_triage")
    if not handed and _domain_of(writer) != own and back:
        return "", [_call(back, {"reason": "the writer moved on to something else"}, 1)]
    if own in ("research", "fact"):
        if not results and "search_references" in _names(request):
            return "", [_call("search_references", {"query": _keywords(writer)}, 1)]
        if results:
            return _search_answer(own, writer, results), []
        return f"{LABEL} I cannot search the references on this call; ask me again.", []
    if own == "editing":
        return _edit(writer), []
    return f"{LABEL} {request.metadata.get('agent_name')} here. You wrote: “{writer[:200]}”.", []


def _first_sentence(text: str, limit: int = 120) -> str:
    sentence = re.split(r"(?<=[.!?])\s", " ".join(text.split()), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def summary_reply(text: str) -> str:
    """An honest offline summary: no understanding, just the first sentence of each message it was given
    (the earlier summary's lines are kept), labelled as the Demo's."""
    lines: list[str] = []
    previous = re.search(r"Summary so far \(messages 1–\d+\):\n(.*?)\n\nNew messages", text, re.S)
    if previous:
        lines += [line for line in previous.group(1).splitlines() if line.startswith("- ")]
    for number, who, content in re.findall(r"^(\d+)\. (Writer|Desk): (.*)$", text, re.M):
        if who == "Writer":
            lines.append(f"- {number}. The writer said: “{_first_sentence(content.removeprefix(LABEL).strip())}”")
        else:
            lines.append(f"- {number}. The desk replied: “{_first_sentence(content.replace(LABEL, '').strip())}”")
    head = "Demo summary (offline, not a language model): the first sentence of each earlier message."
    return head + "\n" + "\n".join(lines[-24:])


def conversation_reply(request: ModelRequest) -> tuple[str, list[ToolCall]]:
    """(text, tool calls) for a conversation request (ModelRequest.metadata["recipe"] == "conversation")."""
    messages = request.messages or [{"role": "user", "content": request.user}]
    if request.metadata.get("purpose") == "summary":
        return summary_reply(str(messages[-1].get("content") or "")), []
    writer = _writer_text(messages)
    if request.metadata.get("purpose") == "consult":
        question = str(messages[-1].get("content") or "").split("\n\n")[0]
        return f"{LABEL} {request.metadata.get('agent_name')} answers “{question[:200]}”: see the references.", []
    results = _tool_results(messages)
    if request.metadata.get("role") == "triage":
        return _triage(request, writer, results)
    handed = any(
        str(m.get("content") or "").startswith("[") and "handed the conversation to" in str(m.get("content"))
        for m in messages[-6:]
    )
    return _specialist(request, writer, results, handed)


def stage_reply(request: ModelRequest) -> str:
    """A pipeline conversation's stage (request.metadata["recipe"]: research, outline, build or review), answered
    as the session pipeline's demo answers it; the built draft (the reply) says it is the offline demo."""
    from orchestration.providers.demo import demo_reply

    text = demo_reply(request)
    if request.metadata.get("recipe") == "build":
        return f"{LABEL} Assembled by fixed rules from the research and the outline.\n\n{text}"
    return text
