"""One question, one answer: may this user do this? Every limit in plans.py is enforced here.

Views and services call ``check(user, action, **context)`` on the server; templates use the
returned Gate to show locked options with an upgrade prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.urls import reverse

from billing.plans import TIER_LABELS, Plan, cheapest_plan_for, model_tier

if TYPE_CHECKING:
    from django.contrib.auth.models import User

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


def _check_model(plan: Plan, model) -> Gate | None:
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

    running = WritingSession.objects.filter(project__owner=user, status__in=ACTIVE_STATUSES)
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
        used, limit, what = WritingSession.objects.filter(project__owner=user).count(), plan.max_sessions, "sessions"
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


def _check_session(plan: Plan, user: User, session, extra_rounds: int = 0) -> Gate | None:
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


def check(user: User, action: str, **context) -> Gate:
    """Gate for ``action``: create_agent (agents=n), start_session / continue_session (session=...,
    extra_rounds=n for continue), use_model (model=...), use_flow (flow=...), run_concurrently,
    and the storage quotas create_project / create_session (adding=n) and store_references
    (adding=characters)."""
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
    elif action == "run_concurrently":
        gate = _check_concurrency(plan, user, context.get("exclude_session_id"))
    else:
        gate = _check_session(plan, user, context["session"], int(context.get("extra_rounds", 0)))
    # Not `gate or ...`: a refusing Gate is falsy (__bool__), so `or` would turn every refusal into a yes.
    return gate if gate is not None else Gate(allowed=True, plan=plan)
