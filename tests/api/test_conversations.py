"""Conversations through the API: start, list, read, rename, send (and wait for the reply), stop,
regenerate, delete; another user's ids are 404; plan limits are 429 with Retry-After."""

from __future__ import annotations

import pytest

from orchestration.conversations import runner
from orchestration.conversations.models import Conversation, Message
from tests.api.conftest import ApiClient, assert_error, new_key
from tests.studio_fixtures import catalogue_model

pytestmark = pytest.mark.django_db(transaction=True)  # the runner works in threads


@pytest.fixture
def desk(owner, demo_llm, settings, monkeypatch):
    from billing.services import grant_credits
    from orchestration.providers import clear_adapter_cache

    settings.DEMO_TOKENS_PER_SECOND = 0
    monkeypatch.setattr("orchestration.tasks.enqueue_drive", lambda pk: None)
    clear_adapter_cache()
    grant_credits(user=owner, amount=10_000, key="test:desk", description="test credits")
    yield
    clear_adapter_cache()


def test_start_send_read_rename_regenerate_and_delete(api, project, desk):
    created = api.post("conversations", {"project_id": project.pk, "title": "Desk"}, headers={"Idempotency-Key": "c1"})
    assert created.status_code == 201, created.content
    conversation = created.json()
    assert conversation["status"] == "draft" and conversation["agents"][0]["role"] == "triage"
    cid = conversation["id"]
    assert (
        api.post(
            "conversations", {"project_id": project.pk, "title": "Desk"}, headers={"Idempotency-Key": "c1"}
        ).json()["id"]
        == cid
    )

    assert_error(api.post(f"conversations/{cid}/messages", {"text": "  "}), 422)
    assert_error(api.post(f"conversations/{cid}/messages", {"text": "x" * 20_001}), 422)
    sent = api.post(f"conversations/{cid}/messages", {"text": "What can the desk do?"})
    assert sent.status_code == 201, sent.content
    body = sent.json()
    assert body["message"]["content"] == "What can the desk do?" and body["status"] == "queued"
    assert body["reply"] is None
    # A second message while the reply is being written: refused, nothing saved.
    assert_error(api.post(f"conversations/{cid}/messages", {"text": "And more?"}), 409)
    assert runner.drive(Conversation.objects.get(pk=cid).session_id) == "finished"

    detail = api.get(f"conversations/{cid}").json()
    assert detail["status"] == "completed"
    roles = [m["role"] for m in detail["messages"]]
    assert roles[0] == "user" and roles[-1] == "assistant" and detail["messages"][-1]["content"]
    assert api.get(f"conversations/{cid}/messages").json()["count"] == len(detail["messages"])
    listing = api.get("conversations", project_id=project.pk).json()
    assert [c["id"] for c in listing["items"]] == [cid]

    assert api.patch(f"conversations/{cid}", {"title": "Renamed"}).json()["title"] == "Renamed"
    assert_error(api.patch(f"conversations/{cid}", {"title": "   "}), 422)
    again = api.post(f"conversations/{cid}/regenerate")
    assert again.status_code == 201 and again.json()["message"]["content"] == "What can the desk do?"
    assert api.post(f"conversations/{cid}/stop").json()["status"] == "stopping"
    assert_error(api.post(f"conversations/{cid}/messages", {"text": "While stopping"}), 409)

    assert api.delete(f"conversations/{cid}").status_code == 204
    assert not Conversation.objects.filter(pk=cid).exists()


def test_validation_and_another_users_conversation(api, outsider_api, project, desk):
    assert_error(api.post("conversations", {"project_id": project.pk, "preset": "nope"}), 409)
    assert_error(api.post("conversations", {"title": "no project"}), 422)
    cid = api.post("conversations", {"project_id": project.pk}).json()["id"]
    assert_error(outsider_api.post("conversations", {"project_id": project.pk}), 404)
    for method, path in [
        ("GET", f"conversations/{cid}"),
        ("PATCH", f"conversations/{cid}"),
        ("DELETE", f"conversations/{cid}"),
        ("GET", f"conversations/{cid}/messages"),
        ("POST", f"conversations/{cid}/messages"),
        ("POST", f"conversations/{cid}/stop"),
        ("POST", f"conversations/{cid}/regenerate"),
    ]:
        body = {"title": "x", "text": "hello"} if method in ("PATCH", "POST") else None
        assert_error(outsider_api.request(method, path, body), 404)
    assert outsider_api.get("conversations").json()["count"] == 0
    assert not Message.objects.exists()


def test_the_plans_messages_per_minute_is_a_429(api, project, desk, owner):
    from billing.plans import PLANS

    cid = api.post("conversations", {"project_id": project.pk}).json()["id"]
    session_id = Conversation.objects.get(pk=cid).session_id
    for i in range(PLANS["free"].messages_per_minute):
        assert api.post(f"conversations/{cid}/messages", {"text": f"Question {i}"}).status_code == 201
        runner.drive(session_id)
    refused = api.post(f"conversations/{cid}/messages", {"text": "One too many"})
    body = assert_error(refused, 429, "rate_limited")
    assert refused["Retry-After"] and "minute" in body["message"]
    assert not Message.objects.filter(content="One too many").exists()


@pytest.mark.live_app(DEMO_TOKENS_PER_SECOND="400")
def test_wait_true_returns_the_finished_reply_from_the_worker(owner, live_app):
    catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    import json
    import urllib.request

    key = new_key(owner)
    api = ApiClient(key)
    from orchestration.models import Project

    project = Project.objects.create(owner=owner, name="Chat")
    cid = api.post("conversations", {"project_id": project.pk}).json()["id"]
    request = urllib.request.Request(
        f"{live_app.url}/api/v1/conversations/{cid}/messages?wait=true&timeout=120",
        data=json.dumps({"text": "What can the desk do?"}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=150) as response:
        assert response.status == 200
        body = json.load(response)
    assert body["status"] == "completed" and body["reply"]["role"] == "assistant"
    final = Message.objects.filter(conversation_id=cid, role="assistant").order_by("-position").first()
    assert body["reply"]["content"] == final.content and final.content
