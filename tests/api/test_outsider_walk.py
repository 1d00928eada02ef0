"""The outsider walk over /api/v1: every operation of the OpenAPI document, called with another user's key
and the owner's ids, answers 404 and changes nothing; operations without ids show only the caller's
own things. The walk reads the schema, so an endpoint added later is covered (or fails the test until
the walk knows how to fill its parameters)."""

from __future__ import annotations

import pytest

from api.v1 import api as api_v1
from orchestration.models import Status, WritingSession
from tests.api.conftest import ApiClient, new_key
from tests.orchestration.test_ownership import owned_world

pytestmark = pytest.mark.django_db

# Bodies that pass validation, so the ownership check (not the body) is what answers.
BODIES = {
    ("POST", "/api/v1/projects"): {"name": "Outsider project"},
    ("PATCH", "/api/v1/projects/{project_id}"): {"name": "Taken over"},
    ("PATCH", "/api/v1/sessions/{session_id}"): {"title": "Taken over"},
    ("POST", "/api/v1/sessions/{session_id}/continue"): {"rounds": 1},
    ("PATCH", "/api/v1/conversations/{conversation_id}"): {"title": "Taken over"},
    ("POST", "/api/v1/conversations/{conversation_id}/messages"): {"text": "Planted message"},
}
REQUIRED_QUERY = {"from_version": 1, "to_version": 2}


def _operations():
    schema = api_v1.get_openapi_schema(path_prefix="/api/v1/")
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def test_every_operation_with_the_owners_ids_is_404_for_an_outsider(owner, outsider):
    world = owned_world(owner, status=Status.PAUSED)
    outsider_api = ApiClient(new_key(outsider))
    from orchestration.conversations.models import Conversation, Message
    from orchestration.conversations.services import create_conversation

    conversation = create_conversation(project=world["project"], user=owner, title="Owner Secret Chat")
    ids = {
        "project_id": world["project"].pk,
        "session_id": world["session"].pk,
        "number": world["version"].number,
        "conversation_id": conversation.pk,
    }
    # The one id in a body: a session in someone else's project.
    body = {"project_id": world["project"].pk, "title": "Planted", "brief": "b"}
    assert outsider_api.post("sessions", body).status_code == 404
    assert not WritingSession.objects.filter(title="Planted").exists()
    assert outsider_api.post("conversations", {"project_id": world["project"].pk}).status_code == 404
    assert not Conversation.objects.filter(project__owner=outsider).exists()
    walked = 0
    # The stream endpoint goes last: it closes the calling thread's database connection (a stream must
    # not hold one), and under the test client that thread is the test's own.
    operations = sorted(_operations(), key=lambda op: op[1].endswith("/events"))
    for method, path, operation in operations:
        params = {p["name"]: p for p in operation.get("parameters", [])}
        path_params = [name for name, p in params.items() if p["in"] == "path"]
        if not path_params:
            continue
        unknown = set(path_params) - set(ids)
        assert not unknown, f"the walk cannot fill {unknown} of {method} {path}: add them to the walk"
        url = path.format(**ids)
        query = {n: REQUIRED_QUERY[n] for n, p in params.items() if p["in"] == "query" and p.get("required")}
        if query:
            url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        response = outsider_api.request(method, url, BODIES.get((method, path), {} if method != "GET" else None))
        assert response.status_code == 404, (method, path, response.status_code, response.content[:300])
        assert b"Owner Secret" not in response.content and b"OWNER-TEXT" not in response.content
        walked += 1
        if not path.endswith("/events"):
            session = WritingSession.objects.get(pk=world["session"].pk)
            assert (session.title, session.status) == ("Owner Secret Session", Status.PAUSED), (method, path)
            assert session.project.name == "Owner Secret Project", (method, path)
            assert Conversation.objects.get(pk=conversation.pk).title == "Owner Secret Chat", (method, path)
            assert not Message.objects.filter(content="Planted message").exists(), (method, path)
    assert walked >= 26  # the schema was read (26 operations take ids today)


def test_operations_without_ids_show_the_outsider_only_their_own_things(owner, outsider):
    from orchestration.conversations.services import create_conversation

    world = owned_world(owner, status=Status.COMPLETED)
    create_conversation(project=world["project"], user=owner, title="Owner Secret Chat")
    outsider_api = ApiClient(new_key(outsider))
    for method, path, _operation in _operations():
        if method != "GET" or "{" in path:
            continue
        response = outsider_api.get(path)
        assert response.status_code == 200, (path, response.content[:300])
        assert b"Owner Secret" not in response.content and b"OWNER-TEXT" not in response.content, path
        assert b"owner@example.com" not in response.content, path
