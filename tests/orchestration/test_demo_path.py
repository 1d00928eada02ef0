"""The newcomer's first run: the short demo path, and what the demo says it costs against the ledger."""

from __future__ import annotations

import pytest
from django.db.models import Sum
from django.urls import reverse

from billing.models import CreditEntry
from orchestration import engine
from orchestration.models import Status, WritingSession
from orchestration.presets import DEMO_RUN_CREDITS
from tests.studio_fixtures import *  # noqa: F403 - fixtures


def test_the_dashboard_says_what_the_demo_costs_and_never_that_it_is_free(owner_client):
    html = owner_client.get(reverse("dashboard")).content.decode()
    assert "costs nothing" not in html
    low, high = DEMO_RUN_CREDITS
    assert f"about {low}–{high} credits" in html


def test_the_demo_page_starts_the_session_without_the_builder(owner_client, owner, demo_llm):
    owner_client.post(reverse("demo_quickstart"))
    session = WritingSession.objects.get(project__owner=owner)
    page = owner_client.get(reverse("demo_ready", args=[session.pk])).content.decode()
    assert session.brief in page and "Critical editor" in page
    assert "Street notes (sample material for the demo)" in page
    assert "Estimated " in page and " credits of your " in page

    response = owner_client.post(reverse("demo_start", args=[session.pk]))
    session.refresh_from_db()
    assert response.status_code == 302 and response.url == reverse("session_detail", args=[session.pk])
    assert session.status == Status.QUEUED
    # Once started, the short path leads to the live page, and Start cannot run twice.
    assert owner_client.get(reverse("demo_ready", args=[session.pk])).url == response.url
    assert owner_client.post(reverse("demo_start", args=[session.pk])).url == response.url


def test_the_demo_page_is_the_owners_only(client, outsider, owner_client, owner, demo_llm):
    owner_client.post(reverse("demo_quickstart"))
    session = WritingSession.objects.get(project__owner=owner)
    client.force_login(outsider)
    assert client.get(reverse("demo_ready", args=[session.pk])).status_code == 404
    assert client.post(reverse("demo_start", args=[session.pk])).status_code == 404
    session.refresh_from_db()
    assert session.status == Status.DRAFT


def test_a_refused_start_is_explained_on_the_demo_page(owner_client, owner, demo_llm):
    owner_client.post(reverse("demo_quickstart"))
    session = WritingSession.objects.get(project__owner=owner)
    session.brief = ""
    session.save()
    response = owner_client.post(reverse("demo_start", args=[session.pk]))
    assert response.status_code == 400
    assert 'data-testid="start-problem"' in response.content.decode()
    session.refresh_from_db()
    assert session.status == Status.DRAFT


@pytest.mark.django_db(transaction=True)
def test_a_whole_demo_run_costs_what_the_dashboard_says(client, instant_demo, enqueued):
    from orchestration.catalogue import seed_catalogue
    from orchestration.presets import seed_presets
    from tests.conftest import make_user

    seed_catalogue()
    seed_presets()
    user = make_user("newcomer@example.com")
    client.force_login(user)
    client.post(reverse("demo_quickstart"))
    session = WritingSession.objects.get(project__owner=user)
    client.post(reverse("demo_start", args=[session.pk]))
    engine.drive(session.pk)
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    assert session.current_round == session.max_rounds  # the newcomer sees every round of the demo
    charged = CreditEntry.objects.filter(user=user, kind="settlement").aggregate(total=Sum("usage"))["total"]
    low, high = DEMO_RUN_CREDITS
    assert low <= charged <= high, charged
    assert session.credits_used == charged
