"""The team service: every write that builds a session's team (agents, their criteria, references,
presets, new drafts). The builder pages, the public API (api/) and the management commands call
these, never the models directly, so a rule lives in one place.

Conventions (as orchestration.services): keyword-only arguments; a refusal the user can act on is an
``orchestration.services.ServiceError`` (its ``upgrade_url`` is set for plan limits); each function
runs in one transaction and re-reads the session row under a lock, so a Start racing an edit can
never leave a running session with a team other than the one it validated.

Validation of field values (lengths, ranges, model access by plan) belongs to the forms
(``AgentForm``, ``CriterionForm``, ``SessionSettingsForm``), which both the pages and the API run
before calling these; the services enforce the rules that need the database: the session is not
running, plan gates and quotas, and ownership.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction

from orchestration import presets
from orchestration.models import (
    ACTIVE_STATUSES,
    Agent,
    Criterion,
    LLMModel,
    Project,
    ReferenceDocument,
    TeamPreset,
    WritingSession,
)
from orchestration.services import ServiceError, enforce_quota

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# What a caller may write on an agent; order, session and ids belong to these services.
AGENT_FIELDS = (
    "name",
    "role",
    "model",
    "fallback_model",
    "role_prompt",
    "temperature",
    "max_output_tokens",
    "thinking_budget_tokens",
    "reasoning_effort",
    "active",
    "tools",
)
CRITERION_FIELDS = ("name", "weight", "description")

RUNNING_MESSAGE = "This session is running. Pause or stop it before changing its team."


class PresetUnusable(ServiceError):
    """The preset cannot be applied (no usable model for its team); the message is for the user."""


@dataclass(frozen=True)
class CriterionSpec:
    """One criterion to write: ``id`` None creates a row, an id updates that row of the agent."""

    name: str
    weight: float
    description: str = ""
    id: int | None = None


def _lock_editable(session: WritingSession, *, user: User | None = None) -> WritingSession:
    """The session row, locked until the caller's transaction ends; refuses a running session (and,
    when ``user`` is given, anyone but its owner)."""
    locked = WritingSession.objects.select_for_update(of=("self",)).select_related("project").get(pk=session.pk)
    if user is not None and locked.project.owner_id != user.pk:
        raise ServiceError("You can only change your own sessions.")
    if locked.status in ACTIVE_STATUSES:
        raise ServiceError(RUNNING_MESSAGE)
    return locked


def _check_flow(user: User, flow: str) -> None:
    from billing.gating import check

    verdict = check(user, "use_flow", flow=flow)
    if not verdict.allowed:
        raise ServiceError(verdict.reason or "This team's flow is not on your plan.", upgrade_url=verdict.upgrade_url)


# --- sessions ----------------------------------------------------------------------------------------


@transaction.atomic
def create_session(
    *,
    user: User,
    project: Project,
    title: str,
    brief: str = "",
    document: str = "",
    preset: TeamPreset | None = None,
    model: LLMModel | None = None,
    every_agent: bool = False,
    max_rounds: int | None = None,
) -> WritingSession:
    """A new draft in ``project`` (which must be ``user``'s), optionally with ``preset``'s team.

    Checks the preset's flow against the plan and the user's session quota under the user's lock
    (ServiceError with the plan's reason and upgrade URL), then applies the preset: ``model`` (an
    LLMModel) overrides the models of a shipped preset, defaulting to the user's default model; with
    ``every_agent`` it replaces every agent's model, the user's own presets' too, and drops their fallback
    models (``manage.py create_session --model``). ``max_rounds`` overrides the preset's (the caller checks
    its range). Raises PresetUnusable (a ServiceError) when no model is available for the preset's team.
    """
    if project.owner_id != user.pk:
        raise ServiceError("You can only add sessions to your own projects.")
    if preset is not None:
        _check_flow(user, preset.flow)
    enforce_quota(user=user, action="create_session")
    session = WritingSession.objects.create(project=project, title=title, brief=brief, document=document)
    if preset is not None:
        try:
            presets.apply_preset(session=session, preset=preset, default_model=model or presets.default_model_for(user))
        except presets.PresetError as exc:
            raise PresetUnusable(str(exc)) from exc
    if model is not None and every_agent:
        session.agents.update(model=model, fallback_model=None)
    if max_rounds is not None:
        session.max_rounds = max_rounds
        session.save(update_fields=["max_rounds"])
    return session


@transaction.atomic
def apply_preset(*, session: WritingSession, user: User, preset: TeamPreset) -> WritingSession:
    """Replace the draft's team and stop settings with ``preset``'s (a shipped one or the user's own).

    Raises ServiceError when the session runs, the preset's flow is not on the plan, or no model is
    available for the team. Returns the session as saved."""
    locked = _lock_editable(session, user=user)
    if preset.owner_id not in (None, user.pk):
        raise ServiceError("Pick a preset team.")
    _check_flow(user, preset.flow)
    try:
        presets.apply_preset(session=locked, preset=preset, default_model=presets.default_model_for(user))
    except presets.PresetError as exc:
        raise PresetUnusable(str(exc)) from exc
    return locked


@transaction.atomic
def clear_team(*, session: WritingSession, user: User | None = None) -> WritingSession:
    """The blank preset: remove every agent (past turns keep their names) and the score watcher."""
    locked = _lock_editable(session, user=user)
    locked.agents.all().delete()
    locked.threshold_agent = None
    locked.save(update_fields=["threshold_agent", "updated_at"])
    return locked


# --- agents ------------------------------------------------------------------------------------------


def renumber_agents(session: WritingSession) -> None:
    """Make the agents' ``order`` 0..n-1 in their current order (after a removal or before an insert)."""
    for index, agent in enumerate(session.agents.order_by("order", "pk")):
        if agent.order != index:
            agent.order = index
            agent.save(update_fields=["order"])


@transaction.atomic
def add_default_agent(*, session: WritingSession, user: User) -> Agent:
    """The builder's "Add agent": a writer first, editors after, on the user's default model, with
    one "Clarity" criterion. Raises ServiceError beyond the plan's agents per session (with the
    upgrade URL), when no model is available, or while the session runs."""
    from billing.gating import check

    locked = _lock_editable(session, user=user)
    count = locked.agents.count()
    verdict = check(user, "create_agent", agents=count + 1)
    if not verdict.allowed:
        raise ServiceError(
            verdict.reason or "Your plan does not allow more agents in a session.", upgrade_url=verdict.upgrade_url
        )
    model = presets.default_model_for(user)
    if model is None:
        raise ServiceError("No model is available for a new agent. Ask an administrator to enable one.")
    renumber_agents(locked)
    agent = Agent.objects.create(
        session=locked,
        order=count,
        name=f"Agent {count + 1}",
        role="editor" if count else "writer",
        model=model,
        role_prompt="Improve the document according to the brief.",
    )
    Criterion.objects.create(agent=agent, name="Clarity", weight=1.0)
    return agent


@transaction.atomic
def add_agent(
    *, session: WritingSession, user: User, fields: dict[str, Any], criteria: Sequence[CriterionSpec] = ()
) -> Agent:
    """Append an agent with ``fields`` (keys from AGENT_FIELDS, values already validated by AgentForm)
    and its criteria. Raises ServiceError beyond the plan's agents per session or while the session
    runs; ValueError for a field outside AGENT_FIELDS (a programming error)."""
    from billing.gating import check

    _reject_unknown(fields, AGENT_FIELDS)
    locked = _lock_editable(session, user=user)
    count = locked.agents.count()
    verdict = check(user, "create_agent", agents=count + 1)
    if not verdict.allowed:
        raise ServiceError(
            verdict.reason or "Your plan does not allow more agents in a session.", upgrade_url=verdict.upgrade_url
        )
    agent = Agent.objects.create(session=locked, order=count, **fields)
    Criterion.objects.bulk_create(
        Criterion(agent=agent, order=i, name=c.name, weight=c.weight, description=c.description)
        for i, c in enumerate(criteria)
    )
    return agent


@transaction.atomic
def update_agent(
    *,
    agent: Agent,
    changes: dict[str, Any],
    criteria: Iterable[CriterionSpec] = (),
    delete_criteria: Iterable[int] = (),
) -> bool:
    """Write ``changes`` (keys from AGENT_FIELDS) on the agent, create or update ``criteria`` and
    delete the agent's criteria whose ids are in ``delete_criteria``.

    Returns True when criterion rows were created or deleted (the page re-renders the card so a new
    row learns its id). Raises ServiceError while the session runs; ValueError for unknown fields.
    Criterion ids that do not belong to this agent are ignored (never someone else's row)."""
    _reject_unknown(changes, AGENT_FIELDS)
    _lock_editable(agent.session)
    for name, value in changes.items():
        setattr(agent, name, value)
    if changes:
        agent.save(update_fields=list(changes))
    rows_changed = False
    for spec in criteria:
        values = {"name": spec.name, "weight": spec.weight, "description": spec.description}
        if spec.id is None:
            Criterion.objects.create(agent=agent, **values)
            rows_changed = True
        else:
            Criterion.objects.filter(agent=agent, pk=spec.id).update(**values)
    deleted, _ = Criterion.objects.filter(agent=agent, pk__in=list(delete_criteria)).delete()
    return rows_changed or bool(deleted)


@transaction.atomic
def replace_criteria(*, agent: Agent, criteria: Sequence[CriterionSpec]) -> None:
    """Replace all of the agent's criteria with ``criteria`` (in that order). ServiceError while running."""
    _lock_editable(agent.session)
    agent.criteria.all().delete()
    Criterion.objects.bulk_create(
        Criterion(agent=agent, order=i, name=c.name, weight=c.weight, description=c.description)
        for i, c in enumerate(criteria)
    )


@transaction.atomic
def remove_agent(*, agent: Agent) -> None:
    """Delete the agent and its criteria; past turns keep its name (Turn.agent_name), so a transcript
    never breaks. ServiceError while the session runs."""
    locked = _lock_editable(agent.session)
    agent.delete()
    renumber_agents(locked)


@transaction.atomic
def move_agent(*, agent: Agent, direction: int) -> None:
    """Swap an agent with its neighbour (-1 = up, +1 = down); nothing at either end. ServiceError while running."""
    session = _lock_editable(agent.session)
    renumber_agents(session)
    agents = list(session.agents.order_by("order", "pk"))
    index = next(i for i, a in enumerate(agents) if a.pk == agent.pk)
    other = index + direction
    if 0 <= other < len(agents):
        agents[index].order, agents[other].order = agents[other].order, agents[index].order
        Agent.objects.bulk_update([agents[index], agents[other]], ["order"])


# --- references --------------------------------------------------------------------------------------


@transaction.atomic
def remove_reference(*, session: WritingSession, reference_id: int) -> bool:
    """Delete one of the session's reference documents; False when it has no such reference.
    ServiceError while the session runs. (Adding them is ``services.add_references``.)"""
    _lock_editable(session)
    deleted, _ = ReferenceDocument.objects.filter(session=session, pk=reference_id).delete()
    return bool(deleted)


def _reject_unknown(values: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = set(values) - set(allowed)
    if unknown:
        raise ValueError(f"Not writable here: {sorted(unknown)}")
