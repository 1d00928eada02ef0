from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing import services
from billing.models import CreditAccount, CreditEntry
from billing.plans import PLANS


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_grant_monthly_credits_is_idempotent_per_user_and_month(owner, django_user_model):
    CreditEntry.objects.all().delete()
    CreditAccount.objects.all().update(balance=0)
    django_user_model.objects.create_user(username="bare@example.com", email="bare@example.com")
    first = _run("grant_monthly_credits")
    assert "Granted monthly credits to 2 user(s)" in first
    again = _run("grant_monthly_credits")
    assert "to 0 user(s); 2 already had them" in again
    assert services.get_balance(owner) == PLANS["free"].monthly_credits
    next_month = dt.date.today().replace(day=1) + dt.timedelta(days=32)
    assert services.grant_monthly_credits(user=owner, period=next_month) is True
    assert services.get_balance(owner) == 2 * PLANS["free"].monthly_credits


def test_grant_monthly_credits_dry_run_changes_nothing(owner):
    CreditEntry.objects.all().delete()
    CreditAccount.objects.all().update(balance=0)
    assert "Would grant monthly credits to 1 user(s)" in _run("grant_monthly_credits", "--dry-run")
    assert not CreditEntry.objects.exists()


def test_paid_plans_do_not_get_free_monthly_credits(owner):
    services.get_account(owner)
    CreditAccount.objects.filter(user=owner).update(plan="starter")
    next_month = dt.date.today().replace(day=1) + dt.timedelta(days=32)
    assert services.grant_monthly_credits(user=owner, period=next_month) is False


def test_schedule_migration_creates_one_daily_schedule(db):
    import importlib

    from django.apps import apps
    from django_q.models import Schedule

    # Transactional tests flush data-migration rows, so run the migration's function directly.
    migration = importlib.import_module("billing.migrations.0002_monthly_credits_schedule")
    Schedule.objects.filter(func=migration.FUNC).delete()
    migration.create_schedule(apps, None)
    migration.create_schedule(apps, None)
    assert Schedule.objects.filter(func="billing.tasks.grant_monthly_credits", schedule_type="D").count() == 1


def test_reconcile_reports_drift_and_repairs_it_with_fix(owner):
    services.get_account(owner)
    CreditAccount.objects.filter(user=owner).update(balance=999)
    with pytest.raises(CommandError):
        _run("reconcile_credits", "--dry-run")
    assert CreditAccount.objects.get(user=owner).balance == 999
    out = _run("reconcile_credits", "--fix")
    assert "cached balance 999, ledger 500" in out and "1 account(s) with drift, 1 repaired." in out
    assert "0 account(s) with drift" in _run("reconcile_credits")


def test_sync_stripe_plans_creates_then_leaves_prices_alone(db, fake_stripe):
    out = _run("sync_stripe_plans")
    assert "starter: create product" in out and "pro: create price" in out
    assert len(fake_stripe.prices) == 2
    assert {p["unit_amount"] for p in fake_stripe.prices.values()} == {2900, 7900}
    assert "0 change(s)" in _run("sync_stripe_plans")
    assert len(fake_stripe.prices) == 2


def test_sync_stripe_plans_replaces_a_changed_price(db, fake_stripe):
    old = fake_stripe.add_price(plan="starter", amount=1900)
    _run("sync_stripe_plans")
    assert old["active"] is False and old["lookup_key"] is None
    (current,) = [p for p in fake_stripe.prices.values() if p["lookup_key"] == "atelier_starter_monthly"]
    assert current["unit_amount"] == 2900


def test_sync_stripe_plans_dry_run_writes_nothing(db, fake_stripe):
    assert "planned (dry run)" in _run("sync_stripe_plans", "--dry-run")
    assert fake_stripe.prices == {} and fake_stripe.calls("POST", "/v1/") == []
