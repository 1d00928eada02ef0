from __future__ import annotations

from billing import gating
from billing.models import CreditAccount


def test_free_plan_limits_agents_with_a_clear_upgrade_reason(owner):
    gate = gating.check(owner, "create_agent", agents=3)
    assert not gate.allowed
    assert gate.reason == "The Free plan allows up to 2 agents per session. Upgrade to Starter for 5."
    assert gate.upgrade_url == "/billing/pricing/"
    assert gating.check(owner, "create_agent", agents=2).allowed


def test_free_plan_allows_demo_and_cheap_models_but_not_premium(owner, demo_model, cheap_model, sonnet):
    assert gating.check(owner, "use_model", model=demo_model).allowed
    assert gating.check(owner, "use_model", model=cheap_model).allowed
    gate = gating.check(owner, "use_model", model=sonnet)
    assert not gate.allowed and "Upgrade to Starter" in gate.reason


def test_paid_plan_unlocks_more(owner, sonnet):
    gating.check(owner, "use_flow", flow="x")  # creates the account
    CreditAccount.objects.filter(user=owner).update(plan="starter")
    assert gating.check(owner, "use_model", model=sonnet).allowed
    assert gating.check(owner, "use_flow", flow="roundtable").allowed


def test_free_plan_only_has_the_sequential_flow(owner):
    assert gating.check(owner, "use_flow", flow="sequential").allowed
    assert not gating.check(owner, "use_flow", flow="roundtable").allowed


def test_start_session_checks_rounds_agents_and_models(owner, cheap_model):
    from orchestration.models import Agent, Project, WritingSession

    project = Project.objects.create(owner=owner, name="P")
    session = WritingSession.objects.create(project=project, title="S", brief="b", max_rounds=3)
    Agent.objects.create(session=session, name="A", model=cheap_model, role_prompt="w")
    assert gating.check(owner, "start_session", session=session).allowed
    gate = gating.check(owner, "continue_session", session=session, extra_rounds=7)
    assert not gate.allowed and "rounds" in gate.reason
    session.max_rounds = 10
    assert "Upgrade to Starter for up to 10" in gating.check(owner, "start_session", session=session).reason
