"""The operator console: analytics, the users list, and dj-stripe grouped away for non-superusers."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from billing import services
from billing.models import CreditAccount
from orchestration.models import Agent, Project, Status, Turn, WritingSession
from tests.conftest import make_user
from tests.studio_fixtures import catalogue_model

pytestmark = pytest.mark.django_db
INVOICE = Path(__file__).resolve().parents[1] / "fixtures" / "stripe" / "invoice.paid.json"


@pytest.fixture
def staff_client(client):
    client.force_login(make_user("ops@example.com", is_staff=True, is_superuser=True))
    return client


def _run(owner, *, title="Essay", status=Status.COMPLETED, model_id="studio-mini", credits=12, cost="0.0123"):
    model = catalogue_model("openai", model_id, output="0.60", name=model_id)
    session = WritingSession.objects.create(
        project=Project.objects.create(owner=owner, name=title),
        title=title,
        brief="b",
        status=status,
        started_at=timezone.now(),
        finished_at=timezone.now(),
        stop_detail="OpenAI rejected the key." if status == Status.FAILED else "",
    )
    agent = Agent.objects.create(session=session, name="W", model=model, role_prompt="w")
    turn = Turn.objects.create(
        session=session,
        round=1,
        agent=agent,
        status=Turn.TurnStatus.COMPLETED,
        model_used=model_id,
        input_tokens=1000,
        output_tokens=500,
        provider_cost=Decimal(cost),
    )
    services.grant_credits(user=owner, amount=1000, key=f"test:{owner.pk}:{title}")
    services.reserve_credits(user=owner, amount=50, key=f"turn:{turn.pk}:reserve", session_id=session.pk)
    services.settle_credits(
        user=owner, reservation_key=f"turn:{turn.pk}:reserve", actual=credits, key=f"turn:{turn.pk}:settle"
    )
    return session


def test_analytics_shows_usage_money_failures_and_revenue_with_svg_charts(staff_client, settings):
    from djstripe.models import Customer, Invoice

    ada = make_user("ada@example.com")
    bob = make_user("bob@example.com")
    _run(ada, title="A", credits=30, cost="0.0300")
    _run(bob, title="B", credits=5, cost="0.0050", status=Status.FAILED, model_id="studio-nano")
    payload = json.loads(INVOICE.read_text())["data"]["object"]
    customer = Customer.objects.create(id=payload["customer"], livemode=False)
    Invoice.objects.create(
        id=payload["id"], customer=customer, stripe_data=payload, created=timezone.now(), livemode=False, metadata={}
    )

    response = staff_client.get(reverse("admin:analytics"))
    html = response.content.decode()
    assert response.status_code == 200
    assert html.count('data-testid="chart"') == 8 and html.count("<svg") >= 8
    assert "Sign-ups" in html and "Active users" in html and "Provider cost" in html
    per_model = html.split('data-testid="per-model"')[1].split("</table>")[0]
    assert "<td>studio-mini</td><td>1</td><td>1,500</td><td>30</td><td>$0.0300</td>" in per_model
    top = html.split('data-testid="top-users"')[1].split("</table>")[0]
    assert top.index("ada@example.com") < top.index("bob@example.com")
    assert "OpenAI rejected the key." in html.split('data-testid="failures"')[1].split("</table>")[0]
    revenue = html.split('data-testid="revenue"')[1].split("</table>")[0]
    assert "<td>Starter</td><td>1</td><td>29.00 USD</td>" in revenue
    # A bar for today's 35 credits, drawn by the server.
    assert re.search(r'<rect class="analytics-bar"[^>]*><title>[^<]*: 35 credits</title>', html)
    assert 'style="' not in html.split('data-testid="analytics"')[1]
    # The period switch only accepts the offered periods.
    assert staff_client.get(reverse("admin:analytics") + "?days=abc").status_code == 200
    assert "<strong>7 days</strong>" in staff_client.get(reverse("admin:analytics") + "?days=7").content.decode()


def test_analytics_is_for_staff_only(client):
    client.force_login(make_user("someone@example.com"))
    response = client.get(reverse("admin:analytics"))
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_users_list_shows_plan_balance_sessions_and_last_activity_with_filters(staff_client):
    ada = make_user("ada@example.com")
    _run(ada, title="A")
    account = CreditAccount.objects.get(user=ada)
    account.plan = "pro"
    account.save()
    idle = make_user("idle@example.com")
    idle.date_joined = timezone.now() - dt.timedelta(days=90)
    idle.save()

    html = staff_client.get(reverse("admin:auth_user_changelist")).content.decode()
    for column in ("Plan", "Balance", "Sessions", "Last activity"):
        assert column in html
    row = next(r for r in html.split("<tr") if ">ada@example.com<" in r)
    assert "Pro" in row and f">{account.balance}<" in row and ">1<" in row

    def emails(query: str) -> set[str]:
        body = staff_client.get(reverse("admin:auth_user_changelist") + query).content.decode()
        return set(re.findall(r'class="field-email"><a href="[^"]+">([^<]+)</a>', body))

    assert emails("?plan=pro") == {"ada@example.com"}
    assert "idle@example.com" in emails("?plan=free")
    assert emails("?sessions=yes") == {"ada@example.com"}
    assert emails("?active=7") == {"ada@example.com", "ops@example.com"}  # ops logged in just now
    assert emails("?active=never") == {"idle@example.com"}


def test_djstripe_is_one_line_for_staff_who_are_not_superusers(client):
    staff = make_user("support@example.com", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(content_type__app_label__in=["djstripe", "orchestration"]))
    client.force_login(staff)
    html = client.get(reverse("admin:index")).content.decode()
    assert re.search(r"Stripe records \(\d+ tables, read by webhooks\)", html)
    assert ">Invoices<" not in html  # its ~40 models are not listed on the index
    assert html.index("Writing sessions") < html.index("Stripe records")
    assert "Analytics" in html
    # dj-stripe's own page still lists them.
    assert ">Invoices<" in client.get(reverse("admin:app_list", args=["djstripe"])).content.decode()


def test_superusers_see_djstripe_in_full(staff_client):
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert "Stripe records" not in html and ">Invoices<" in html
