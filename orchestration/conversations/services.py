"""Every write to a conversation. Views, the public API and commands call these (keyword-only arguments).

Shapes (the API builds its JSON from these models; see docs/conversations.md):
- Conversation: id, project_id, title, created_at, updated_at, last_message_at, max_handoffs,
  session_id (the hidden run: its events are the live stream; `status` of that session is the reply's
  state: draft = no message yet, queued/running = a reply is being written, stopping, completed, stopped,
  failed).
- Message: id, exchange, position, role (user | assistant | handoff | tool | note), status (completed |
  pending | stopped | cut_off | refused | failed), agent_name, content, data (see Message), created_at.

Refusals raise ServiceError (orchestration.services) with a message for the user; limits raise its
subclass RateLimited (an HTTP 429 for the API, a notice in the page). Nothing the user typed is lost on a
refusal: the message is only saved when the run is accepted.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max, QuerySet
from django.utils import timezone
from django.utils.text import slugify

from orchestration.conversations import presets
from orchestration.conversations.models import Conversation, Message, MessageRole, MessageStatus
from orchestration.events import append_event
from orchestration.models import (
    ACTIVE_STATUSES,
    Agent,
    Flow,
    LLMModel,
    Project,
    Status,
    WritingSession,
    turn_reservation_key,
)
from orchestration.services import ServiceError, emit_status, enqueue_run, set_status, status_payload

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from orchestration.conversations.search import Hit

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 200
MAX_MESSAGE_CHARS = 20_000
DEFAULT_TITLE = "New conversation"


class RateLimited(ServiceError):
    """A plan limit on messages per minute or replies streaming at once (HTTP 429 in the API)."""

    status_code = 429


# --- Reading ----------------------------------------------------------------------------------------


def conversations_for(*, user: User, project: Project | None = None) -> QuerySet[Conversation]:
    """The user's conversations (one project's, or all), most recently active first, with their run state."""
    qs = Conversation.objects.filter(project__owner=user).select_related("project", "session")
    if project is not None:
        qs = qs.filter(project=project)
    return qs.order_by("-updated_at", "-pk")


def get_conversation(*, user: User, pk: int) -> Conversation:
    """The user's conversation `pk`; raises Conversation.DoesNotExist for anyone else's (views: 404)."""
    return Conversation.objects.select_related("project", "session").get(pk=pk, project__owner=user)


def transcript(conversation: Conversation) -> list[Message]:
    """The visible transcript, in order (superseded messages left out)."""
    return list(conversation.messages.filter(superseded=False).order_by("position"))


def team(conversation: Conversation) -> list[Agent]:
    """The conversation's active agents, triage first (a pipeline conversation's: in stage order)."""
    agents = list(conversation.session.agents.filter(active=True).select_related("model", "fallback_model"))
    return sorted(agents, key=lambda a: (a.role != presets.TRIAGE, a.order, a.pk))


# --- Creating, renaming, deleting ----------------------------------------------------------------------


def _clean_title(title: str) -> str:
    title = " ".join((title or "").split())
    if len(title) > MAX_TITLE_CHARS:
        raise ServiceError(f"A title can be at most {MAX_TITLE_CHARS} characters.")
    return title


PIPELINE_CHAT_CONFIG = {
    "passages": 6,
    "tone": "neutral",
    "length_words": 400,
    "format": "article",
    "revise_below": None,
}


def _check_flow_gate(user: User, flow: str) -> None:
    """A pipeline conversation needs a plan with the pipeline flow (as a pipeline session does)."""
    from billing.gating import check

    if flow != "pipeline":
        return
    gate = check(user, "use_flow", flow="pipeline")
    if not gate.allowed:
        raise ServiceError(gate.reason, upgrade_url=gate.upgrade_url)


def _add_team(session: WritingSession, spec: dict[str, Any], model: LLMModel, *, first_order: int = 0) -> None:
    """Create a preset's agents (and their rubrics) on the conversation's run."""
    from orchestration.models import Criterion

    for order, agent in enumerate(presets.preset_agents(spec), start=first_order):
        row = Agent.objects.create(
            session=session,
            order=order,
            name=agent["name"],
            role=agent["role"],
            model=model,
            role_prompt=agent["prompt"],
            temperature=agent.get("temperature", 0.5),
            max_output_tokens=1024 if spec["flow"] == "triage" else 2048,
        )
        Criterion.objects.bulk_create(
            Criterion(agent=row, order=i, name=c["name"], description=c["description"], weight=c["weight"])
            for i, c in enumerate(agent.get("criteria") or [])
        )


@transaction.atomic
def create_conversation(*, project: Project, user: User, title: str = "", preset: str = "writing-desk") -> Conversation:
    """Start an empty conversation in `project` with a preset team: "writing-desk" (default; the triage flow)
    or "pipeline-desk" (the pipeline flow: research -> plan -> build -> review per message).

    Agents use the user's default model (the Demo model unless they chose another). Raises ServiceError
    for someone else's or an archived project, an unknown preset, no usable model, or a plan limit (the
    pipeline flow needs a plan that includes it).
    """
    from billing.gating import check
    from billing.services import hold_user_lock
    from orchestration.presets import default_model_for

    if project.owner_id != user.pk:
        raise ServiceError("You can only start conversations in your own projects.")
    if project.archived_at is not None:
        raise ServiceError("This project is archived. Restore it to start a conversation.")
    spec = presets.CONVERSATION_PRESETS.get(preset)
    if spec is None:
        raise ServiceError(f"Unknown conversation preset {preset!r}.")
    title = _clean_title(title) or DEFAULT_TITLE
    hold_user_lock(user=user)  # concurrent creations cannot all pass the count
    specialists = sum(1 for a in presets.preset_agents(spec) if a["role"] == presets.SPECIALIST)
    gate = check(user, "create_conversation", specialists=specialists)
    if not gate.allowed:
        raise ServiceError(gate.reason, upgrade_url=gate.upgrade_url)
    _check_flow_gate(user, spec["flow"])
    model = default_model_for(user)
    if model is None:
        raise ServiceError("No model is available. Ask the operator to enable the Demo model.")
    session = WritingSession.objects.create(
        project=project,
        title=title,
        flow=Flow.CONVERSATION,
        brief="",
        flow_config=dict(PIPELINE_CHAT_CONFIG) if spec["flow"] == "pipeline" else {},
    )
    _add_team(session, spec, model)
    return Conversation.objects.create(project=project, title=title, session=session, flow=spec["flow"])


@transaction.atomic
def switch_flow(*, conversation: Conversation, user: User, flow: str) -> Conversation:
    """Switch what answers the next messages: "triage" (the Writing desk) or "pipeline" (the Pipeline desk).

    The other flow's agents are set inactive (kept, with their settings) and this flow's are made active,
    created from the preset on the first switch. The transcript is kept: follow-ups in the new flow see it.
    Raises ServiceError while a reply is being written, for an unknown flow, or when the plan does not
    include the pipeline flow.
    """
    from orchestration.presets import default_model_for

    session = _lock(conversation, user)
    _refuse_while_active(session)
    spec = presets.CONVERSATION_PRESETS.get(presets.PRESET_FOR_FLOW.get(flow, ""))
    if spec is None:
        raise ServiceError("Choose the triage flow or the pipeline flow.")
    if conversation.flow == flow:
        return conversation
    _check_flow_gate(user, flow)
    roles = set(PIPELINE_ROLES) if flow == "pipeline" else {presets.TRIAGE, presets.SPECIALIST}
    agents = session.agents.all()
    agents.exclude(role__in=roles).update(active=False)
    if agents.filter(role__in=roles).exists():
        agents.filter(role__in=roles).update(active=True)
    else:
        model = default_model_for(user)
        if model is None:
            raise ServiceError("No model is available. Ask the operator to enable the Demo model.")
        _add_team(session, spec, model, first_order=agents.count())
    if flow == "pipeline" and not session.flow_config:
        WritingSession.objects.filter(pk=session.pk).update(flow_config=dict(PIPELINE_CHAT_CONFIG))
    Conversation.objects.filter(pk=conversation.pk).update(flow=flow, updated_at=timezone.now())
    conversation.flow = flow
    append_event(session_id=session.pk, kind="status", payload={**status_payload(session), "flow": flow})
    return conversation


@transaction.atomic
def rename_conversation(*, conversation: Conversation, user: User, title: str) -> Conversation:
    """Rename; the title must have text. Raises ServiceError otherwise or for someone else's conversation."""
    _check_owner(conversation, user)
    title = _clean_title(title)
    if not title:
        raise ServiceError("Give the conversation a title.")
    Conversation.objects.filter(pk=conversation.pk).update(title=title, updated_at=timezone.now())
    WritingSession.objects.filter(pk=conversation.session_id).update(title=title)
    conversation.title = title
    return conversation


@transaction.atomic
def delete_conversation(*, conversation: Conversation, user: User) -> None:
    """Delete the conversation, its messages, its run and its events (credits already spent stay spent:
    the ledger keeps its entries). A reply being written is cancelled: its worker finds the run gone."""
    from billing.services import release_credits
    from orchestration.models import Turn

    _check_owner(conversation, user)
    session_id = conversation.session_id
    # A call still streaming holds a reservation: give it back (its turn is deleted with the run).
    for turn_id in Turn.objects.filter(session_id=session_id, status=Turn.TurnStatus.STREAMING).values_list(
        "pk", flat=True
    ):
        release_credits(user=user, reservation_key=turn_reservation_key(turn_id), key=f"turn:{turn_id}:release")
    Conversation.objects.filter(pk=conversation.pk).delete()
    WritingSession.objects.filter(pk=session_id).delete()


def _check_owner(conversation: Conversation, user: User) -> None:
    owner_id = Project.objects.filter(pk=conversation.project_id).values_list("owner_id", flat=True).first()
    if owner_id != user.pk:
        raise ServiceError("You can only change your own conversations.")


# --- Sending and controlling replies ---------------------------------------------------------------------


def _lock(conversation: Conversation, user: User) -> WritingSession:
    """Lock the conversation's run row (serialises sends, stops and the runner's writes) and check the owner."""
    _check_owner(conversation, user)
    return WritingSession.objects.select_for_update().select_related("project__owner").get(pk=conversation.session_id)


def _refuse_while_active(session: WritingSession) -> None:
    if session.status in ACTIVE_STATUSES:
        raise ServiceError("A reply is still being written. Wait for it, or stop it first.")


def _check_message_gate(conversation: Conversation, user: User) -> None:
    from billing.gating import check
    from billing.services import hold_user_lock

    hold_user_lock(user=user)  # two tabs sending at once are counted one after the other
    gate = check(user, "send_message", conversation=conversation)
    if gate.allowed:
        return
    if "a minute" in gate.reason or "at a time" in gate.reason:
        raise RateLimited(gate.reason, upgrade_url=gate.upgrade_url)
    raise ServiceError(gate.reason, upgrade_url=gate.upgrade_url)


def _clean_text(text: str) -> str:
    text = (text or "").strip()
    if not text:
        raise ServiceError("Write a message first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ServiceError(f"A message can be at most {MAX_MESSAGE_CHARS:,} characters (this one has {len(text):,}).")
    return text


def next_position(conversation_id: int) -> int:
    """The next free transcript position (call with the run row locked)."""
    return (Message.objects.filter(conversation_id=conversation_id).aggregate(m=Max("position"))["m"] or 0) + 1


def _announce(session: WritingSession, *, added: Message | None = None, superseded: list[int] | tuple[()] = ()) -> None:
    """Tell open chat pages (the event log: WebSocket push and catch-up) what changed in the transcript."""
    if superseded:
        append_event(session_id=session.pk, kind="superseded", payload={"message_ids": list(superseded)})
    if added is not None:
        append_event(session_id=session.pk, kind="message", payload={"message_id": added.pk, "role": added.role})


def _supersede(conversation: Conversation, **filters: Any) -> list[int]:
    ids = list(conversation.messages.filter(superseded=False, **filters).values_list("pk", flat=True))
    Message.objects.filter(pk__in=ids).update(superseded=True)
    return ids


def _queue_reply(session: WritingSession, conversation: Conversation) -> None:
    """Hand the run to a worker after commit (status queued, event, task). `started_at` marks when this
    reply was asked for (the runner counts its calls from there)."""
    set_status(session, Status.QUEUED, stop_reason="", stop_detail="", started_at=timezone.now())
    emit_status(session)
    enqueue_run(session.pk)
    now = timezone.now()
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=now, last_message_at=now)


@transaction.atomic
def send_message(*, conversation: Conversation, user: User, text: str) -> Message:
    """Save the user's message and start one run that answers it; returns the saved message.

    Raises ServiceError (empty or too long text, a reply still streaming, the plan's team or models) or
    RateLimited (messages per minute, replies streaming at once). On any refusal nothing is saved.
    The first message of an untitled conversation becomes its title (first 60 characters).
    """
    session = _lock(conversation, user)
    text = _clean_text(text)
    _refuse_while_active(session)
    _check_message_gate(conversation, user)
    exchange = (
        Message.objects.filter(conversation=conversation, role=MessageRole.USER).aggregate(m=Max("exchange"))["m"] or 0
    ) + 1
    message = Message.objects.create(
        conversation=conversation,
        exchange=exchange,
        position=next_position(conversation.pk),
        role=MessageRole.USER,
        content=text,
    )
    if conversation.title == DEFAULT_TITLE and exchange == 1:
        title = " ".join(text.split())[:60]
        Conversation.objects.filter(pk=conversation.pk).update(title=title)
        WritingSession.objects.filter(pk=session.pk).update(title=title)
        conversation.title = title
    _announce(session, added=message)
    _queue_reply(session, conversation)
    return message


@transaction.atomic
def stop_reply(*, conversation: Conversation, user: User) -> bool:
    """Stop the reply being written: the call is cancelled within about a second and its text so far is
    kept (marked stopped). Returns False when no reply was being written (nothing to stop)."""
    session = _lock(conversation, user)
    if session.status not in (Status.QUEUED, Status.RUNNING):
        return False
    set_status(session, Status.STOPPING, stop_reason="user_stopped", stop_detail="Stopped by you.")
    emit_status(session)
    enqueue_run(session.pk)  # a queued run has no executor yet to notice; this one will
    return True


def _last_exchange(conversation: Conversation) -> Message:
    user_message = (
        Message.objects.filter(conversation=conversation, role=MessageRole.USER, superseded=False)
        .order_by("-position")
        .first()
    )
    if user_message is None:
        raise ServiceError("There is no message to answer yet.")
    return user_message


@transaction.atomic
def regenerate_reply(*, conversation: Conversation, user: User) -> Message:
    """Answer the last user message again: its earlier answer (reply, handoffs, tool calls) is superseded
    (hidden, kept) and a new run starts. Returns the user message being answered. Charged like any reply."""
    session = _lock(conversation, user)
    _refuse_while_active(session)
    user_message = _last_exchange(conversation)
    _check_message_gate(conversation, user)
    gone = _supersede(conversation, exchange=user_message.exchange, position__gt=user_message.position)
    _announce(session, superseded=gone)
    _queue_reply(session, conversation)
    return user_message


@transaction.atomic
def edit_last_message(*, conversation: Conversation, user: User, text: str) -> Message:
    """Replace the last user message with `text` and answer it again: the old message and its answer are
    superseded (hidden, kept). Returns the new message."""
    session = _lock(conversation, user)
    text = _clean_text(text)
    _refuse_while_active(session)
    old = _last_exchange(conversation)
    _check_message_gate(conversation, user)
    gone = _supersede(conversation, exchange=old.exchange, position__gte=old.position)
    message = Message.objects.create(
        conversation=conversation,
        exchange=old.exchange,
        position=next_position(conversation.pk),
        role=MessageRole.USER,
        content=text,
        data={"edited_from": old.pk},
    )
    _announce(session, added=message, superseded=gone)
    _queue_reply(session, conversation)
    return message


def tool_key(agent: Agent) -> str:
    """The agent's name as a tool-name part: lower-case letters, digits and underscores (both APIs accept
    ^[a-zA-Z0-9_-]{1,64}$ for tool names; "transfer_to_" + 40 characters fits)."""
    return (slugify(agent.name).replace("-", "_") or f"agent_{agent.pk}")[:40]


# --- The team (the team page and, later, the API) ---------------------------------------------------------

MAX_HANDOFFS_LIMIT = 10
# What the team page may write on an agent (validated by conversations.forms.TeamAgentForm first).
TEAM_AGENT_FIELDS = ("name", "model", "fallback_model", "role_prompt", "tools")
TEAM_BUSY = (
    "A reply is being written. Change the team when it has finished, or stop it first "
    "(what you save applies from your next message)."
)


def _lock_team(conversation: Conversation, user: User) -> WritingSession:
    """Lock the run row, check the owner, and refuse while a reply is being written (a reply in flight
    keeps the team it started with; a saved change applies from the next message)."""
    session = _lock(conversation, user)
    if session.status in ACTIVE_STATUSES:
        raise ServiceError(TEAM_BUSY)
    return session


PIPELINE_ROLES = ("researcher", "planner", "builder", "reviewer")
PIPELINE_TEAM = (
    "A pipeline conversation's team is its four stages (researcher, planner, builder, reviewer): change an "
    "agent's prompt or model instead, or switch the conversation to the triage flow to add or remove specialists."
)


def _team_agent(conversation: Conversation, agent_id: int) -> Agent:
    agent = Agent.objects.filter(session_id=conversation.session_id, pk=agent_id, active=True).first()
    if agent is None:
        raise ServiceError("That agent is not in this conversation's team.")
    return agent


def _check_unique_name(conversation: Conversation, name: str, *, agent_id: int | None) -> None:
    key = tool_key(Agent(name=name, pk=agent_id))
    others = Agent.objects.filter(session_id=conversation.session_id, active=True)
    if agent_id is not None:
        others = others.exclude(pk=agent_id)
    for other in others:
        if tool_key(other) == key:
            raise ServiceError(f"“{other.name}” already has that name in this team. Pick another name.")


@transaction.atomic
def update_settings(*, conversation: Conversation, user: User, title: str, max_handoffs: int) -> Conversation:
    """Rename the conversation and set its handoff limit per message (0..MAX_HANDOFFS_LIMIT).

    Raises ServiceError for an empty or too long title, a limit out of range, someone else's
    conversation, or while a reply is being written (TEAM_BUSY). Returns the conversation as saved."""
    _lock_team(conversation, user)
    if not isinstance(max_handoffs, int) or not 0 <= max_handoffs <= MAX_HANDOFFS_LIMIT:
        raise ServiceError(f"Handoffs per message must be a whole number from 0 to {MAX_HANDOFFS_LIMIT}.")
    title = _clean_title(title)
    if not title:
        raise ServiceError("Give the conversation a title.")
    Conversation.objects.filter(pk=conversation.pk).update(
        title=title, max_handoffs=max_handoffs, updated_at=timezone.now()
    )
    WritingSession.objects.filter(pk=conversation.session_id).update(title=title)
    conversation.title, conversation.max_handoffs = title, max_handoffs
    return conversation


@transaction.atomic
def update_team_agent(*, conversation: Conversation, user: User, agent_id: int, changes: dict[str, Any]) -> Agent:
    """Write `changes` on one agent of the conversation (keys from TEAM_AGENT_FIELDS: name str,
    model / fallback_model LLMModel or None, role_prompt str, tools list of INFO_TOOLS names).

    The next model call uses them (the reply being written keeps its team: refused meanwhile).
    Raises ServiceError for an agent outside this conversation, a name another agent already has, a model
    the plan does not include, or while a reply is being written; ValueError for other keys."""
    from orchestration import team as team_service
    from orchestration.conversations.tools import INFO_TOOL_NAMES
    from orchestration.forms import check_model_choice

    unknown = set(changes) - set(TEAM_AGENT_FIELDS)
    if unknown:
        raise ValueError(f"Not writable here: {sorted(unknown)}")
    _lock_team(conversation, user)
    agent = _team_agent(conversation, agent_id)
    if "name" in changes:
        name = " ".join(str(changes["name"] or "").split())
        if not name or len(name) > 80:
            raise ServiceError("An agent's name needs 1 to 80 characters.")
        _check_unique_name(conversation, name, agent_id=agent.pk)
        changes = {**changes, "name": name}
    if "role_prompt" in changes and not str(changes["role_prompt"] or "").strip():
        raise ServiceError("Write the agent's role prompt.")
    if "tools" in changes:
        changes = {**changes, "tools": sorted(set(changes["tools"] or ()) & INFO_TOOL_NAMES)}
    model = changes.get("model", agent.model)
    fallback = changes.get("fallback_model", agent.fallback_model)
    if model is None:
        raise ServiceError("Pick a model.")
    if fallback is not None and fallback.pk == model.pk:
        raise ServiceError("The fallback must be a different model.")
    for picked in (changes.get("model"), changes.get("fallback_model")):
        try:
            check_model_choice(user, picked)
        except ValidationError as error:
            raise ServiceError(" ".join(error.messages)) from None
    team_service.update_agent(agent=agent, changes=changes)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    return agent


@transaction.atomic
def add_specialist(*, conversation: Conversation, user: User, kind: str = "blank") -> Agent:
    """Add a specialist of `kind` (presets.SPECIALIST_KINDS: blank, research, editing, data, code,
    fact-check) on the user's default model, named after its kind ("Data specialist", then
    "Data specialist 2", ...). Raises ServiceError (with the upgrade URL) beyond the plan's specialists
    per conversation, for an unknown kind, with no usable model, or while a reply is being written."""
    from billing.gating import check
    from orchestration.presets import default_model_for

    spec = presets.SPECIALIST_KINDS.get(kind)
    if spec is None:
        raise ServiceError("Pick a kind of specialist from the list.")
    session = _lock_team(conversation, user)
    if conversation.flow == "pipeline":
        raise ServiceError(PIPELINE_TEAM)
    agents = list(session.agents.filter(active=True))
    specialists = sum(1 for a in agents if a.role != presets.TRIAGE)
    gate = check(user, "team_specialists", specialists=specialists + 1)
    if not gate.allowed:
        raise ServiceError(gate.reason, upgrade_url=gate.upgrade_url)
    model = default_model_for(user)
    if model is None:
        raise ServiceError("No model is available. Ask the operator to enable the Demo model.")
    name, n = spec["name"], 1
    taken = {tool_key(a) for a in agents}
    while tool_key(Agent(name=name)) in taken:
        n += 1
        name = f"{spec['name']} {n}"
    agent = Agent.objects.create(
        session=session,
        order=max((a.order for a in agents), default=-1) + 1,
        name=name,
        role=presets.SPECIALIST,
        model=model,
        role_prompt=spec["prompt"],
        temperature=0.5,
        max_output_tokens=1024,
    )
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    return agent


@transaction.atomic
def remove_specialist(*, conversation: Conversation, user: User, agent_id: int) -> None:
    """Remove a specialist from the team (earlier messages keep its name). The triage agent cannot be
    removed. If it held the conversation, triage answers the next message. Raises ServiceError for the
    triage agent, an agent outside this conversation, or while a reply is being written."""
    from orchestration import team as team_service

    _lock_team(conversation, user)
    agent = _team_agent(conversation, agent_id)
    if agent.role in PIPELINE_ROLES:
        raise ServiceError(PIPELINE_TEAM)
    if agent.role == presets.TRIAGE:
        raise ServiceError("The triage agent answers first and cannot be removed; change its prompt or model instead.")
    team_service.remove_agent(agent=agent)
    Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())


def search(*, user: User, query: str, project: Project | None = None, limit: int = 50) -> list[Hit]:
    """Full-text search of the user's conversation titles and messages: see conversations.search.search."""
    from orchestration.conversations.search import search as run_search

    return run_search(user=user, query=query, project=project, limit=limit)


__all__ = [
    "MessageStatus",
    "RateLimited",
    "ServiceError",
    "add_specialist",
    "conversations_for",
    "create_conversation",
    "delete_conversation",
    "edit_last_message",
    "get_conversation",
    "regenerate_reply",
    "remove_specialist",
    "rename_conversation",
    "search",
    "send_message",
    "stop_reply",
    "switch_flow",
    "team",
    "transcript",
    "update_settings",
    "update_team_agent",
]
