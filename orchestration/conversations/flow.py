"""Triage with handoffs as a policy over persisted state: the next model call of a reply, from the messages.

`next_move(conversation)` reads only the database, so a reply interrupted anywhere (a worker killed
mid-stream, a retry) is re-planned from what was saved: the messages of the current exchange say who holds
the conversation (triage, or the specialist of the last handoff), whether an agent-as-tool question waits
for its answer, and whether the final reply exists. `build_request` turns that into one ModelRequest:
system prompt, the transcript fitted to the model's context window, and the tools the agent may call.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from orchestration.conversations import tools as conversation_tools
from orchestration.conversations.models import Conversation, Message, MessageRole, MessageStatus
from orchestration.conversations.presets import TRIAGE
from orchestration.models import Agent, LLMModel
from orchestration.providers.base import estimate_tokens

MAX_TOOL_CALLS = 8  # information and agent-as-tool calls per user message; then the agent must answer
MAX_CALLS = 16  # model calls per user message, whatever happens (a last guard against loops)
CONTEXT_SPARE_TOKENS = 256
SUMMARY_MAX_TOKENS = 400  # the rolling summary's reply limit (it replaces the summarised messages)
HANDOFF_LINE = re.compile(r"^\s*HANDOFF\s*:\s*(?P<target>[^|\n—–-]+?)\s*(?:[|—–-]+\s*(?P<reason>.*))?$", re.I)


@dataclass(frozen=True)
class Call:
    """One model call of the current reply.

    purpose "reply": `agent_id` holds the conversation and answers (or hands off / calls tools);
    purpose "consult": `agent_id` answers the agent-as-tool question in message `message_id`;
    purpose "summary": `agent_id` (triage) writes the rolling summary through exchange `summary_through`.
    """

    agent_id: int
    exchange: int
    purpose: str
    handoffs_left: int
    tool_calls_left: int
    message_id: int | None = None
    summary_through: int = 0

    @property
    def slot(self) -> str:
        suffix = f":{self.message_id}" if self.message_id else ""
        return f"x{self.exchange}:{self.purpose}:{self.agent_id}{suffix}"[:40]


@dataclass(frozen=True)
class Done:
    reason: str  # "answered", "nothing_to_answer", "too_many_calls"


@dataclass
class Exchange:
    """The current exchange's state, read from its messages."""

    number: int
    user_message: Message | None
    entries: list[Message] = field(default_factory=list)
    holder_id: int | None = None
    handoffs: int = 0
    tool_calls: int = 0


def visible_messages(conversation: Conversation) -> list[Message]:
    """The conversation's messages that count (not superseded), in transcript order: one query, shared by
    the policy and the prompt of a call (the runner reads them once per call)."""
    return list(conversation.messages.filter(superseded=False).order_by("position"))


def read_exchange(conversation: Conversation, triage_id: int, messages: list[Message] | None = None) -> Exchange:
    """The current exchange's state. `messages`: visible_messages(conversation), read here when None."""
    if messages is None:
        messages = visible_messages(conversation)
    users = [m for m in messages if m.role == MessageRole.USER]
    if not users:
        return Exchange(number=0, user_message=None)
    last = users[-1]
    entries = [m for m in messages if m.position > last.position]
    # Whoever held the conversation at the end of the last exchange answers the next message (a specialist
    # keeps it until it hands back).
    earlier = [m for m in messages if m.position < last.position and m.role == MessageRole.HANDOFF]
    holder = earlier[-1].data.get("to") if earlier else triage_id
    state = Exchange(number=last.exchange, user_message=last, entries=entries, holder_id=holder)
    for message in entries:
        if message.role == MessageRole.HANDOFF:
            state.handoffs += 1
            state.holder_id = message.data.get("to") or state.holder_id
        elif message.role == MessageRole.TOOL:
            state.tool_calls += 1
    return state


def next_move(
    conversation: Conversation, agents: list[Agent], calls_so_far: int, messages: list[Message] | None = None
) -> Call | Done:
    """The next call of the current reply, or Done when it is complete (or must end). `messages`:
    visible_messages(conversation), read here when None."""
    triage = next((a for a in agents if a.role == TRIAGE), agents[0] if agents else None)
    if triage is None:
        return Done("nothing_to_answer")
    state = read_exchange(conversation, triage.pk, messages)
    if state.user_message is None:
        return Done("nothing_to_answer")
    ended = [m for m in state.entries if m.role in (MessageRole.ASSISTANT, MessageRole.NOTE) and m.data.get("final")]
    if ended:
        return Done("answered")
    if calls_so_far >= MAX_CALLS:
        return Done("too_many_calls")
    known = {a.pk for a in agents}
    holder = state.holder_id if state.holder_id in known else triage.pk
    handoffs_left = max(0, conversation.max_handoffs - state.handoffs)
    tool_calls_left = max(0, MAX_TOOL_CALLS - state.tool_calls)
    pending = next((m for m in state.entries if m.status == MessageStatus.PENDING), None)
    if pending is not None and pending.data.get("agent_id") in known:
        return Call(pending.data["agent_id"], state.number, "consult", handoffs_left, tool_calls_left, pending.pk)
    return Call(holder, state.number, "reply", handoffs_left, tool_calls_left)


# --- Prompts -----------------------------------------------------------------------------------------


def describe(agent: Agent) -> str:
    """One line on what a teammate does: the first sentence of its prompt after the "You are ..." line."""
    lines = [line.strip() for line in agent.role_prompt.splitlines() if line.strip()]
    text = " ".join(lines[1:]) if len(lines) > 1 else (lines[0] if lines else agent.name)
    return (re.split(r"(?<=[.!?])\s", text)[0])[:200]


def tools_for(agent: Agent, agents: list[Agent], call: Call, *, native: bool) -> list[dict[str, Any]]:
    """The tools offered on this call: none for a model without tool calling or a summary; a consult (a
    specialist asked as a tool) gets its information tools only, never handoff or ask tools."""
    from orchestration.conversations.services import tool_key

    if not native or call.purpose == "summary":
        return []
    if call.purpose == "consult":
        return conversation_tools.info_tools_for(agent) if call.tool_calls_left > 0 else []
    offered: list[dict[str, Any]] = []
    if call.tool_calls_left > 0:
        offered += conversation_tools.info_tools_for(agent)  # the agent's own choice (team page)
    if call.handoffs_left > 0:
        for other in agents:
            if other.pk == agent.pk or (agent.role != TRIAGE and other.role != TRIAGE):
                continue  # triage hands to any specialist; a specialist hands back to triage
            offered.append(conversation_tools.transfer_tool(tool_key(other), other.name, describe(other)))
    if agent.role == TRIAGE and call.tool_calls_left > 0:
        for other in agents:
            if other.pk != agent.pk:
                offered.append(conversation_tools.ask_tool(tool_key(other), other.name, describe(other)))
    return offered


def system_prompt(conversation: Conversation, agent: Agent, agents: list[Agent], call: Call, *, native: bool) -> str:
    team = "\n".join(f"- {a.name}{' (you)' if a.pk == agent.pk else ''}: {describe(a)}" for a in agents)
    parts = [
        agent.role_prompt.strip(),
        f'You are "{agent.name}" in a conversation with a writer in their project "{conversation.project.name}".'
        f" Your team:\n{team}",
        "Write in Markdown. The writer sees every handoff and tool call.",
    ]
    if call.purpose == "consult":
        parts.append("A teammate is asking you a question. Answer it directly and briefly; do not greet.")
    elif call.handoffs_left <= 0:
        parts.append("The handoff limit for this message is reached: answer the writer yourself now.")
    elif native:
        if agent.role == TRIAGE:
            parts.append(
                "To hand the conversation to a specialist, call its transfer_to_… tool with a short reason. "
                "To ask a specialist something and keep the conversation, call its ask_… tool."
            )
        else:
            parts.append("When the writer needs something outside your specialty, call transfer_to_… for triage.")
    else:
        names = ", ".join(a.name for a in agents if a.pk != agent.pk)
        parts.append(
            "To hand the conversation to a teammate, reply with exactly one line and nothing else:\n"
            "HANDOFF: <teammate name> | <short reason>\n"
            f"Teammates: {names}. Otherwise answer the writer directly."
        )
    if call.tool_calls_left <= 0:
        parts.append("You have used the tools enough for this message: answer with what you have.")
    return "\n\n".join(parts)


def _note_for(message: Message, agent: Agent) -> str | None:
    """An entry of the current exchange the agent did not produce itself, as a line of context."""
    if message.role == MessageRole.HANDOFF:
        data = message.data
        return f"[{data.get('from_name', 'A teammate')} handed the conversation to {data.get('to_name', 'you')}: " + (
            f"{data.get('reason') or 'no reason given'}]"
        )
    if message.role == MessageRole.TOOL:
        data = message.data
        result = data.get("result") or ""
        return f"[{message.agent_name} called {data.get('name')} {json.dumps(data.get('arguments') or {})}: {result}]"
    if message.role == MessageRole.ASSISTANT and message.content:
        return f"[{message.agent_name} said: {message.content}]"
    return None


def current_exchange_messages(state: Exchange, agent: Agent) -> list[dict[str, Any]]:
    """The current exchange as neutral messages for `agent`: its own tool calls since it took the
    conversation go natively (call + result pairs), everything else as bracketed context lines."""
    assert state.user_message is not None
    out: list[dict[str, Any]] = [{"role": "user", "content": state.user_message.content}]
    since = 0  # entries before the agent last took the conversation are context, not its own calls
    for index, message in enumerate(state.entries):
        if message.role == MessageRole.HANDOFF and message.data.get("to") == agent.pk:
            since = index
    for index, message in enumerate(state.entries):
        own = message.agent_id == agent.pk and index >= since and message.data.get("call_id")
        if own and message.role == MessageRole.TOOL and message.status != MessageStatus.PENDING:
            call = {"id": message.data["call_id"], "name": message.data["name"], "arguments": message.data["arguments"]}
            if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": message.data.get("text", ""), "tool_calls": [call]})
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "name": call["name"],
                    "content": message.data.get("result") or "",
                }
            )
            continue
        if message.role == MessageRole.ASSISTANT and message.agent_id == agent.pk:
            continue  # its own words before a tool call travel with that call (data["text"])
        note = _note_for(message, agent)
        if note:
            out.append({"role": "user", "content": note})
    return out


def history_messages(
    conversation: Conversation, before_exchange: int, messages: list[Message] | None = None
) -> list[tuple[int, list[dict[str, Any]]]]:
    """Earlier exchanges, oldest first: (exchange number, [user message, final reply]) with handoffs and
    tools left out. `messages`: visible_messages(conversation), read here when None."""
    if messages is None:
        messages = visible_messages(conversation)
    exchanges: dict[int, list[dict[str, Any]]] = {}
    for message in messages:
        if message.exchange >= before_exchange or message.role not in (MessageRole.USER, MessageRole.ASSISTANT):
            continue
        if message.role == MessageRole.ASSISTANT and not message.data.get("final"):
            continue
        role = "user" if message.role == MessageRole.USER else "assistant"
        exchanges.setdefault(message.exchange, []).append({"role": role, "content": message.content or "(empty)"})
    return list(exchanges.items())


@dataclass
class Prompt:
    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    estimated_tokens: int
    notes: list[str]
    text: str  # the messages as plain text (estimates and the demo provider's reading)
    # Exchanges were cut that the stored summary does not cover: a summary through this exchange would let
    # the model see them (0 = nothing to summarise). The prompt as built (cut, with its note) is the fallback.
    summarise_through: int = 0


class PromptTooLarge(Exception):
    pass


def _tokens(messages: list[dict[str, Any]]) -> int:
    return sum(estimate_tokens(json.dumps(m, ensure_ascii=False)) for m in messages)


def _newest_that_fit(
    history: list[tuple[int, list[dict[str, Any]]]], budget: int
) -> tuple[list[tuple[int, list[dict[str, Any]]]], int]:
    """The newest exchanges whose estimated tokens fit `budget` (oldest first), and the budget left."""
    kept: list[tuple[int, list[dict[str, Any]]]] = []
    for number, exchange in reversed(history):
        cost = _tokens(exchange)
        if cost > budget:
            break
        budget -= cost
        kept.insert(0, (number, exchange))
    return kept, budget


def summary_message(summary: str, count: int) -> dict[str, Any]:
    """The stored summary as the first message of a prompt (`count`: the messages it stands for)."""
    return {
        "role": "user",
        "content": f"[Summary of the earlier conversation (messages 1–{count}), written by the desk: {summary}]",
    }


def summary_note(count: int) -> str:
    """What the page says under a reply whose prompt carried the summary."""
    return (
        f"Messages 1–{count} (your first {count // 2 or 1} message{'s' if count // 2 != 1 else ''} and the replies) "
        "summarised to fit the model's context window; the model sees the summary and the newer messages."
    )


def fit_prompt(
    *,
    system: str,
    tools: list[dict[str, Any]],
    history: list[tuple[int, list[dict[str, Any]]]],
    current: list[dict[str, Any]],
    window: int,
    max_tokens: int,
    summary: str = "",
    summary_through: int = 0,
) -> Prompt:
    """Fit the conversation so far into `window` beside the system prompt, tools, the current exchange and
    the reply's `max_tokens`.

    `history`: earlier exchanges, oldest first, as (exchange number, messages). A stored `summary` of
    exchanges 1..`summary_through` replaces them; the newest later exchanges that fit go in full. Exchanges
    that are neither summarised nor fit are cut (the note says how many) and `summarise_through` names the
    exchange a new summary should reach — with headroom, so the next messages fit too without another
    summary call. Raises PromptTooLarge when even the current exchange does not fit."""
    fixed = estimate_tokens(system) + estimate_tokens(json.dumps(tools)) + _tokens(current)
    budget = window - max_tokens - CONTEXT_SPARE_TOKENS - fixed
    if budget < 0:
        raise PromptTooLarge(
            f"This message and its context need about {fixed:,} tokens, more than the model's context window "
            f"({window:,}) leaves beside a {max_tokens:,}-token reply. Shorten the message."
        )
    covered = [(n, x) for n, x in history if summary and n <= summary_through]
    newer = [(n, x) for n, x in history if not (summary and n <= summary_through)]
    head: list[dict[str, Any]] = []
    covered_count = sum(len(x) for _, x in covered)
    if covered:
        head = [summary_message(summary, covered_count)]
        if _tokens(head) > budget:
            head, newer = [], history  # a summary too large for this model: cut instead
    kept, left = _newest_that_fit(newer, budget - _tokens(head))
    notes = []
    if head:
        notes.append(summary_note(covered_count))
    cut = newer[: len(newer) - len(kept)]
    summarise_through = 0
    if cut:
        notes.append(
            f"The {len(cut)} earliest exchange{'s were' if len(cut) != 1 else ' was'} left out to fit the model's "
            "context window; the model sees the newer ones."
        )
        # Summarise enough that the kept exchanges use at most half of what is left beside a new summary.
        room = budget - SUMMARY_MAX_TOKENS - 64
        half, _ = _newest_that_fit(newer, max(0, room // 2))
        summarise_through = max(n for n, _ in newer[: len(newer) - len(half)])
    messages = head + [m for _, exchange in kept for m in exchange] + current
    text = "\n\n".join(str(m.get("content") or "") for m in messages)
    used = window - max_tokens - CONTEXT_SPARE_TOKENS - left
    return Prompt(system, messages, tools, used, notes, text, summarise_through)


def consult_messages(question_message: Message, state: Exchange) -> list[dict[str, Any]]:
    """A consult's messages: the question (with the writer's message), then the consulted specialist's own
    tool calls for it so far, natively (call + result pairs)."""
    question = (question_message.data.get("arguments") or {}).get("question") or ""
    writer = state.user_message.content if state.user_message else ""
    out: list[dict[str, Any]] = [
        {
            "role": "user",
            "content": f"{question_message.agent_name} asks you: {question}\n\n[The writer's message: {writer}]",
        }
    ]
    for message in state.entries:
        if message.role != MessageRole.TOOL or message.data.get("consult_of") != question_message.pk:
            continue
        call = {"id": message.data["call_id"], "name": message.data["name"], "arguments": message.data["arguments"]}
        if out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
            out[-1]["tool_calls"].append(call)
        else:
            out.append({"role": "assistant", "content": message.data.get("text", ""), "tool_calls": [call]})
        out.append(
            {"role": "tool", "tool_call_id": call["id"], "name": call["name"], "content": message.data["result"]}
        )
    return out


def build_prompt(
    conversation: Conversation,
    agent: Agent,
    model: LLMModel,
    agents: list[Agent],
    call: Call,
    max_tokens: int,
    messages: list[Message] | None = None,
) -> Prompt:
    """The whole prompt for `call` on `model` (raises PromptTooLarge). `messages`:
    visible_messages(conversation), read here when None."""
    if messages is None:
        messages = visible_messages(conversation)
    native = model.supports_tools
    triage = next((a for a in agents if a.role == TRIAGE), agent)
    state = read_exchange(conversation, triage.pk, messages)
    system = system_prompt(conversation, agent, agents, call, native=native)
    offered = tools_for(agent, agents, call, native=native)
    if call.purpose == "consult":
        question = next(m for m in state.entries if m.pk == call.message_id)
        current, history = consult_messages(question, state), []
    else:
        current = current_exchange_messages(state, agent)
        history = history_messages(conversation, state.number, messages)
    return fit_prompt(
        system=system,
        tools=offered,
        history=history,
        current=current,
        window=model.context_window,
        max_tokens=max_tokens,
        summary=conversation.summary,
        summary_through=conversation.summary_through,
    )


# --- The rolling summary of cut exchanges -----------------------------------------------------------------

SUMMARY_SYSTEM = (
    "You keep the running summary of a conversation between a writer and their writing desk (a triage agent "
    "and specialists), so the desk can carry on without the old messages. Merge the summary so far with the "
    "new messages into one summary of at most 200 words: the writer's project and goals, facts, names, "
    "numbers, decisions and open questions, in plain sentences. Only what the messages say; no greeting, "
    "no advice, no headings."
)


def build_summary_prompt(
    conversation: Conversation, through: int, model: LLMModel, max_tokens: int, messages: list[Message] | None = None
) -> Prompt:
    """The summariser's prompt: the stored summary (if any) plus the exchanges after it up to `through`,
    shortened from the oldest end to fit `model`'s context window beside a `max_tokens` reply."""
    history = history_messages(conversation, through + 1, messages)
    start = conversation.summary_through if conversation.summary else 0
    earlier = sum(len(x) for n, x in history if n <= start)
    lines = []
    number = earlier
    for n, exchange in history:
        if n <= start:
            continue
        for message in exchange:
            number += 1
            who = "Writer" if message["role"] == "user" else "Desk"
            lines.append(f"{number}. {who}: {message['content']}")
    new = "\n\n".join(lines)
    budget = model.context_window - max_tokens - CONTEXT_SPARE_TOKENS - estimate_tokens(SUMMARY_SYSTEM) - 64
    previous = conversation.summary if start else ""
    budget -= estimate_tokens(previous)
    while new and estimate_tokens(new) > max(budget, 0):
        new = "" if len(new) < 200 else "[…]" + new[len(new) // 5 :]  # drop the oldest fifth until it fits
    head = f"Summary so far (messages 1–{earlier}):\n{previous}\n\n" if previous else ""
    text = f"{head}New messages ({earlier + 1}–{number}):\n\n{new}\n\nWrite the updated summary."
    request_messages = [{"role": "user", "content": text}]
    return Prompt(
        SUMMARY_SYSTEM, request_messages, [], estimate_tokens(SUMMARY_SYSTEM) + _tokens(request_messages), [], text
    )


def parse_text_handoff(text: str, agent: Agent, agents: list[Agent]) -> tuple[Agent, str] | None:
    """A text-routing reply ("HANDOFF: Research specialist | needs sources") from a model without tools:
    (target, reason), or None when the reply is an answer. Targets match by name or tool key, any case."""
    from orchestration.conversations.services import tool_key

    first = next((line for line in text.splitlines() if line.strip()), "")
    match = HANDOFF_LINE.match(first)
    if not match:
        return None
    wanted = match.group("target").strip().lower()
    for other in agents:
        if other.pk != agent.pk and wanted in (other.name.lower(), tool_key(other), tool_key(other).replace("_", " ")):
            return other, (match.group("reason") or "").strip()[:300]
    return None
