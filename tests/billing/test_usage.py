"""Usage on the billing page adds up from the real engine's ledger: by session, agent and model, with cost.

The engine runs a two-agent session through the real SDKs against the fake provider server, so the
settlements it writes are the ones the page reads.
"""

from __future__ import annotations

import importlib
from decimal import Decimal

import pytest
from django.apps import apps
from django.db.models import Sum

from billing import services
from billing.models import CreditEntry, EntryKind
from orchestration import engine
from orchestration import services as orchestration_services
from orchestration.models import Turn
from tests.orchestration.engine_helpers import counting_replies, two_agent_session

pytestmark = pytest.mark.django_db(transaction=True)
backfill = importlib.import_module("billing.migrations.0003_backfill_entry_sessions").backfill


@pytest.fixture
def providers(fake_llm, settings, monkeypatch):
    from orchestration.providers import clear_adapter_cache

    settings.PROVIDERS = fake_llm.provider_settings()
    settings.PROVIDER_TIMEOUT_SECONDS = 3
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda pk: None)
    clear_adapter_cache()
    yield fake_llm
    clear_adapter_cache()


@pytest.fixture
def ran_session(providers, owner):
    from billing.plans import PRO

    account = services.get_account(owner)
    account.plan = PRO
    account.save(update_fields=["plan"])
    services.grant_credits(user=owner, amount=100_000, key="test:topup", description="test")
    providers.reply(*[counting_replies()] * 4)
    session = two_agent_session(owner, max_rounds=2)
    orchestration_services.start_session(session=session, user=owner)
    engine.drive(session.pk)
    session.refresh_from_db()
    return session


def test_every_entry_of_a_run_carries_its_session(ran_session, owner):
    entries = CreditEntry.objects.filter(user=owner, kind__in=[EntryKind.RESERVATION, EntryKind.SETTLEMENT])
    assert entries.count() == 8  # 4 turns: a reservation and a settlement each
    assert set(entries.values_list("session_id", flat=True)) == {ran_session.pk}


def test_the_billing_page_shows_usage_by_session_agent_and_model_with_provider_cost(ran_session, owner, client):
    client.force_login(owner)
    body = client.get("/billing/").content.decode()
    by_session = body.split('data-testid="usage-by-session"')[1].split("</table>")[0]
    credits = CreditEntry.objects.filter(session_id=ran_session.pk, kind=EntryKind.SETTLEMENT).aggregate(
        total=Sum("usage")
    )["total"]
    cost = Turn.objects.filter(session=ran_session).aggregate(total=Sum("provider_cost"))["total"]
    assert credits > 0 and cost > Decimal(0)
    assert "Why cities need trees" in by_session
    assert f"<td>4</td><td>{credits}</td><td>${cost:.4f}</td>" in by_session
    by_agent = body.split('data-testid="usage-by-agent"')[1].split("</table>")[0]
    assert "Writer" in by_agent and "Editor" in by_agent
    by_model = body.split('data-testid="usage-by-model"')[1].split("</table>")[0]
    assert "claude-test" in by_model and "local-llama" in by_model
    # The ledger explains the hold and the change, so a positive settlement does not read like a refund.
    assert 'data-testid="ledger-help"' in body
    settlement = CreditEntry.objects.filter(session_id=ran_session.pk, kind=EntryKind.SETTLEMENT).first()
    assert f"The call used {settlement.usage} credits; the other {settlement.amount} held credits came back." in body


def test_the_backfill_gives_old_entries_their_session_from_the_turn_and_the_reservation(ran_session, owner, client):
    # Entries written before the fix had no session (and an entry closing a reservation may lack a turn).
    CreditEntry.objects.filter(user=owner).update(session_id=None)
    odd = CreditEntry.objects.filter(kind=EntryKind.SETTLEMENT).first()
    CreditEntry.objects.filter(pk=odd.pk).update(turn_id=None)
    client.force_login(owner)
    before = client.get("/billing/").content.decode()
    assert "Why cities need trees" not in before.split('data-testid="usage-by-session"')[-1].split("</table>")[0]

    backfill(apps, None)

    turn_entries = CreditEntry.objects.filter(user=owner, kind__in=[EntryKind.RESERVATION, EntryKind.SETTLEMENT])
    assert set(turn_entries.values_list("session_id", flat=True)) == {ran_session.pk}
    grants = CreditEntry.objects.filter(user=owner, kind=EntryKind.GRANT)
    assert set(grants.values_list("session_id", flat=True)) == {None}  # nothing to attribute them to
    after = client.get("/billing/").content.decode()
    assert "Why cities need trees" in after.split('data-testid="usage-by-session"')[1].split("</table>")[0]
    backfill(apps, None)  # running it again changes nothing
    assert set(turn_entries.values_list("session_id", flat=True)) == {ran_session.pk}
