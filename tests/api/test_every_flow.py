"""Every registered flow, driven only through the API with the demo provider: a project, a session from
the flow's shipped preset, start, the run (the engine as the worker runs it), turns, the document, its
versions, the report where the flow has one, and the exported file."""

from __future__ import annotations

import pytest

from billing.services import grant_credits
from orchestration import engine
from orchestration.models import SESSION_FLOWS, Flow
from tests.api.conftest import ApiClient, new_key

pytestmark = pytest.mark.django_db(transaction=True)  # the engine runs its database work in threads

REFERENCE = """# Urban trees

Street trees cool the pavement by several degrees in summer, and shade lowers the energy cities spend on cooling.

## Storm water

A tree's roots and crown slow storm water, so drains overflow less often during heavy rain in cities.
"""
FLOWS_WITH_REPORTS = {Flow.ROUNDTABLE, Flow.PIPELINE, Flow.PLANNED}


@pytest.fixture
def starter_api(owner, settings, monkeypatch):
    from billing.models import CreditAccount
    from orchestration import presets
    from orchestration.catalogue import seed_catalogue
    from orchestration.providers import clear_adapter_cache

    settings.DEMO_TOKENS_PER_SECOND = 0
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda pk: None)
    clear_adapter_cache()
    seed_catalogue()
    presets.seed_presets()
    grant_credits(user=owner, amount=100_000, key="test:api-flows", description="test credits")
    CreditAccount.objects.filter(user=owner).update(plan="starter")  # every flow is on Starter
    yield ApiClient(new_key(owner))
    clear_adapter_cache()


def test_every_flow_runs_from_creation_to_export_through_the_api(starter_api):
    api = starter_api
    shipped = [p for p in api.get("presets").json() if p["shipped"]]
    by_flow = {}
    for preset in shipped:
        by_flow.setdefault(preset["flow"], preset["slug"])
    assert set(by_flow) == set(SESSION_FLOWS), "every session flow has a shipped preset to drive"
    project = api.post("projects", {"name": "Flows"}).json()["id"]
    for flow, slug in sorted(by_flow.items()):
        created = api.post(
            "sessions",
            {
                "project_id": project,
                "title": f"{flow} run",
                "brief": "Write a short article arguing that cities should plant more street trees.",
                "preset": slug,
                "max_rounds": 2,
                "references": [{"title": "Tree notes", "content": REFERENCE}],
            },
        )
        assert created.status_code == 201, (flow, created.content)
        sid = created.json()["id"]
        assert created.json()["flow"] == flow
        started = api.post(f"sessions/{sid}/start", headers={"Idempotency-Key": f"start-{sid}"})
        assert started.status_code == 200, (flow, started.content)
        for _ in range(20):  # each drive runs until its time budget; a run needs one or a few
            engine.drive(sid)
            state = api.get(f"sessions/{sid}").json()
            if state["status"] not in ("queued", "running", "pausing", "stopping"):
                break
        assert state["status"] == "completed", (flow, state["stop_reason"], state["stop_detail"])
        turns = api.get(f"sessions/{sid}/turns", limit=100).json()
        assert turns["count"] >= 2 and all(t["status"] for t in turns["items"])
        assert sum(t["credits"] for t in turns["items"]) == state["credits_used"] > 0
        document = api.get(f"sessions/{sid}/document").json()
        assert document["content"].strip(), flow
        assert api.get(f"sessions/{sid}/versions").json()["count"] >= 1
        exported = api.get(f"sessions/{sid}/export", format="md")
        assert exported.status_code == 200 and document["content"].strip()[:60] in exported.content.decode()
        report = api.get(f"sessions/{sid}/report")
        assert report.status_code == (200 if flow in FLOWS_WITH_REPORTS else 404), flow
