"""One question, one answer: may this user do this? Every limit in plans.py is enforced here.

Views and services call ``check(user, action, **context)`` on the server; templates use the
returned Gate to show locked options with an upgrade prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.urls import reverse

from billing.plans import TIER_LABELS, Plan, cheapest_plan_for, model_tier

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from orchestration.models import Conversation, LLMModel, WritingSession

ACTIONS = {
    "create_agent",
    "start_session",
    "continue_session",
    "use_model",
    "use_flow",
    "run_concurrently",
    "create_project",
    "create_session",
    "store_references",
    "create_conversation",
    "send_message",
    "team_specialists",
}


@dataclass(frozen=True)
class Gate:
    allowed: bool
    reason: str = ""
    upgrade_url: str = ""
    plan: Plan | None = None  # the user's plan now
    upgrade_to: Plan | None = None  # the cheapest plan that would allow it

    def __bool__(self) -> bool:
        return self.allowed


def _deny(plan: Plan, limit: str, upgrade_to: Plan | None, upgrade_detail: str) -> Gate:
    reason = f"The {plan.name} plan {limit}."
    if upgrade_to is not None:
        reason += f" Upgrade to {upgrade_to.name} {upgrade_detail}."
    return Gate(allowed=False, reason=reason, upgrade_url=reverse("pricing"), plan=plan, upgrade_to=upgrade_to)


def _check_agents(plan: Plan, agents: int) -> Gate | None:
    if agents <= plan.max_agents:
        return None
    up = cheapest_plan_for(lambda p: p.max_agents >= agents)
    return _deny(plan, f"allows up to {plan.max_agents} agents per session", up, f"for {up.max_agents}" if up else "")


def _check_rounds(plan: Plan, rounds: int) -> Gate | None:
    if rounds <= plan.max_rounds:
        return None
    up = cheapest_plan_for(lambda p: p.max_rounds >= rounds)
    return _deny(
        plan, f"allows up to {plan.max_rounds} rounds per session", up, f"for up to {up.max_rounds}" if up else ""
    )


def _check_model(plan: Plan, model: LLMModel) -> Gate | None:
    if not (model.is_demo or model.is_priced):
        return Gate(allowed=False, reason=f"{model.display_name} has no price in the catalogue yet.", plan=plan)
    tier = model_tier(model)
    if plan.allows_tier(tier):
        return None
    up = cheapest_plan_for(lambda p: p.allows_tier(tier))
    return _deny(plan, f"does not include {TIER_LABELS[tier].lower()} such as {model.display_name}", up, "to use them")


def _check_flow(plan: Plan, flow: str) -> Gate | None:
    if plan.allows_flow(flow):
        return None
    up = cheapest_plan_for(lambda p: p.allows_flow(flow))
    return _deny(plan, f"does not include the {flow.replace('_', ' ')} flow", up, "to use every flow")


def _check_concurrency(plan: Plan, user: User, exclude_session_id: int | None) -> Gate | None:
    from orchestration.models import ACTIVE_STATUSES, WritingSession

    # A conversation's reply has its own limit (concurrent_replies, see _check_message).
    running = WritingSession.objects.filter(project__owner=user, status__in=ACTIVE_STATUSES).exclude(
        flow="conversation"
    )
    if exclude_session_id is not None:
        running = running.exclude(pk=exclude_session_id)
    if running.count() < plan.concurrent_runs:
        return None
    up = cheapest_plan_for(lambda p: p.concurrent_runs > plan.concurrent_runs)
    runs = "run" if plan.concurrent_runs == 1 else "runs"
    return _deny(
        plan,
        f"allows {plan.concurrent_runs} {runs} at a time; wait for one to finish",
        up,
        f"for {up.concurrent_runs}" if up else "",
    )


def _check_storage(plan: Plan, user: User, action: str, adding: int) -> Gate | None:
    """Per-user quotas on what is stored (projects, sessions, reference text). Counted here; the
    caller holds billing.services.hold_user_lock so concurrent creations cannot all pass the count."""
    from django.db.models import Sum
    from django.db.models.functions import Length

    from orchestration.models import Project, ReferenceDocument, WritingSession

    if action == "create_project":
        used, limit, what = Project.objects.filter(owner=user).count(), plan.max_projects, "projects"
    elif action == "create_session":
        sessions = WritingSession.objects.filter(project__owner=user).exclude(flow="conversation")
        used, limit, what = sessions.count(), plan.max_sessions, "sessions"
    else:
        used = (
            ReferenceDocument.objects.filter(session__project__owner=user).aggregate(total=Sum(Length("content")))[
                "total"
            ]
            or 0
        )
        limit, what = plan.max_reference_chars, "characters of reference documents"
    if used + adding <= limit:
        return None
    field = {"create_project": "max_projects", "create_session": "max_sessions"}.get(action, "max_reference_chars")
    up = cheapest_plan_for(lambda p: getattr(p, field) >= used + adding)
    detail = f"for {getattr(up, field):,}" if up else ""
    return _deny(plan, f"keeps up to {limit:,} {what}; delete some first", up, detail)


def _check_session(plan: Plan, user: User, session: WritingSession, extra_rounds: int = 0) -> Gate | None:
    agents = [a for a in session.agents.select_related("model", "fallback_model").all() if a.active]
    # Fallbacks too: the engine switches to them on errors, so a plan-locked fallback (from a preset saved
    # on a higher plan, a duplicate, or a downgrade) would otherwise run a model the plan does not include.
    models = [m for a in agents for m in (a.model, a.fallback_model) if m is not None]
    for gate in (
        _check_agents(plan, len(agents)),
        _check_flow(plan, session.flow),
        _check_rounds(plan, max(session.max_rounds, session.current_round + extra_rounds)),
        *(_check_model(plan, m) for m in models),
        _check_concurrency(plan, user, session.pk),
    ):
        if gate is not None:
            return gate
    return None


def _check_conversations(plan: Plan, user: User, specialists: int) -> Gate | None:
    from orchestration.models import Conversation

    used = Conversation.objects.filter(project__owner=user).count()
    if used >= plan.max_conversations:
        up = cheapest_plan_for(lambda p: p.max_conversations > used)
        detail = f"for {up.max_conversations:,}" if up else ""
        return _deny(plan, f"keeps up to {plan.max_conversations:,} conversations; delete some first", up, detail)
    return _check_specialists(plan, specialists)


def _check_specialists(plan: Plan, specialists: int) -> Gate | None:
    if specialists > plan.max_specialists:
        up = cheapest_plan_for(lambda p: p.max_specialists >= specialists)
        detail = f"for up to {up.max_specialists}" if up else ""
        return _deny(plan, f"allows up to {plan.max_specialists} specialists per conversation", up, detail)
    return None


def _check_message(plan: Plan, user: User, conversation: Conversation) -> Gate | None:
    """Messages per minute and replies streaming at once (plans.py), then the conversation's team."""
    from datetime import timedelta

    from django.utils import timezone

    from orchestration.models import ACTIVE_STATUSES, Message, WritingSession

    since = timezone.now() - timedelta(seconds=60)
    sent = Message.objects.filter(conversation__project__owner=user, role="user", created_at__gte=since).count()
    if sent >= plan.messages_per_minute:
        up = cheapest_plan_for(lambda p: p.messages_per_minute > plan.messages_per_minute)
        return _deny(
            plan,
            f"allows {plan.messages_per_minute} messages a minute; wait a moment and send it again",
            up,
            f"for {up.messages_per_minute}" if up else "",
        )
    streaming = WritingSession.objects.filter(
        project__owner=user, flow="conversation", status__in=ACTIVE_STATUSES
    ).exclude(pk=conversation.session_id)
    if streaming.count() >= plan.concurrent_replies:
        up = cheapest_plan_for(lambda p: p.concurrent_replies > plan.concurrent_replies)
        replies = "reply" if plan.concurrent_replies == 1 else "replies"
        return _deny(
            plan,
            f"streams {plan.concurrent_replies} {replies} at a time; wait for the other reply to finish",
            up,
            f"for {up.concurrent_replies}" if up else "",
        )
    agents = [a for a in conversation.session.agents.select_related("model", "fallback_model") if a.active]
    specialists = len([a for a in agents if a.role != "triage"])
    if conversation.flow == "pipeline":
        # A pipeline conversation is gated like a pipeline session: the plan must include the flow, and
        # its team is the four stages (not specialists).
        gate = _check_flow(plan, "pipeline")
        if gate is not None:
            return gate
        missing = {"researcher", "planner", "builder", "reviewer"} - {a.role for a in agents}
        if missing:
            return Gate(False, "The pipeline needs a researcher, a planner, a builder and a reviewer.")
    elif specialists > plan.max_specialists:
        up = cheapest_plan_for(lambda p: p.max_specialists >= specialists)
        detail = f"for up to {up.max_specialists}" if up else ""
        return _deny(plan, f"allows up to {plan.max_specialists} specialists per conversation", up, detail)
    for model in [m for a in agents for m in (a.model, a.fallback_model) if m is not None]:
        gate = _check_model(plan, model)
        if gate is not None:
            return gate
    return None


def check(user: User, action: str, **context: Any) -> Gate:
    """Gate for ``action``: create_agent (agents=n), start_session / continue_session (session=...,
    extra_rounds=n for continue), use_model (model=...), use_flow (flow=...), run_concurrently,
    and the storage quotas create_project / create_session (adding=n) and store_references
    (adding=characters); conversations: create_conversation (specialists=n) and send_message
    (conversation=...: messages per minute, replies streaming at once, specialists and models), and
    team_specialists (specialists=n: a conversation's team after adding one, on the team page)."""
    from billing.services import effective_plan, get_account

    if action not in ACTIONS:
        raise ValueError(f"Unknown gated action {action!r}")
    plan = effective_plan(get_account(user))
    if action == "create_agent":
        gate = _check_agents(plan, int(context.get("agents", 1)))
    elif action == "use_model":
        gate = _check_model(plan, context["model"])
    elif action == "use_flow":
        gate = _check_flow(plan, str(context["flow"]))
    elif action in ("create_project", "create_session", "store_references"):
        gate = _check_storage(plan, user, action, int(context.get("adding", 1)))
    elif action == "create_conversation":
        gate = _check_conversations(plan, user, int(context.get("specialists", 0)))
    elif action == "team_specialists":
        gate = _check_specialists(plan, int(context.get("specialists", 0)))
    elif action == "send_message":
        gate = _check_message(plan, user, context["conversation"])
    elif action == "run_concurrently":
        gate = _check_concurrency(plan, user, context.get("exclude_session_id"))
    else:
        gate = _check_session(plan, user, context["session"], int(context.get("extra_rounds", 0)))
    # Not `gate or ...`: a refusing Gate is falsy (__bool__), so `or` would turn every refusal into a yes.
    return gate if gate is not None else Gate(allowed=True, plan=plan)
