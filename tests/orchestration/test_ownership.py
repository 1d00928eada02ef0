"""An outsider gets nothing of the owner's: every URL of the orchestration app, the billing pages, the WebSocket.

The URL walk introspects `orchestration.urls.urlpatterns`, so a view added later is covered without
anyone remembering to add it here: a pattern with a URL argument this file cannot fill fails the test.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.db.models import Q
from django.test import Client
from django.urls import URLPattern, reverse

from orchestration import events as ev
from orchestration.models import (
    Agent,
    Conversation,
    Criterion,
    DocumentVersion,
    Message,
    Project,
    ReferenceDocument,
    SessionEvent,
    Status,
    TeamPreset,
    Turn,
    WritingSession,
)
from orchestration.urls import urlpatterns
from orchestration.versions import record_version
from tests.studio_fixtures import catalogue_model

SECRETS = (
    "Owner Secret Project",
    "Owner Secret Session",
    "Owner Secret Agent",
    "Owner secret preset",
    "OWNER-TEXT",
    "Owner Secret Conversation",
)

# What a form post might carry, so a view that forgot its owner check would act rather than just fail validation.
HOSTILE_POST = {
    "name": "Hacked",
    "title": "Hacked",
    "brief": "Hacked",
    "document": "Hacked",
    "note": "Hacked",
    "content": "Hacked",
    "max_rounds": "2",
    "extra_rounds": "2",
    "flow": "sequential",
    "direction": "up",
    "confirm": "yes",
}


def owned_world(owner, *, status: str, who: str = "Owner") -> dict:
    """Everything an owner can have, with the ids the URLs take. Names and texts start with `who`."""
    text = f"{who.upper()}-TEXT"
    model = catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    project = Project.objects.create(owner=owner, name=f"{who} Secret Project")
    session = WritingSession.objects.create(
        project=project,
        title=f"{who} Secret Session",
        brief=f"{text} brief",
        document=f"{text} document",
        status=status,
        current_round=1,
    )
    agent = Agent.objects.create(session=session, name=f"{who} Secret Agent", model=model, role_prompt=text)
    criterion = Criterion.objects.create(agent=agent, name="Clarity", weight=1.0)
    other_agent = Agent.objects.create(session=session, order=1, name="Second", model=model, role_prompt="Edit.")
    Criterion.objects.create(agent=other_agent, name="Evidence", weight=1.0)
    turn = Turn.objects.create(
        session=session,
        round=1,
        agent=agent,
        agent_name=agent.name,
        status=Turn.TurnStatus.COMPLETED,
        output_text=f"{text} turn",
    )
    record_version(session=session, content=f"{text} v1", note="Starting document")
    version = record_version(session=session, content=f"{text} v2", turn=turn, note="Round 1")
    reference = ReferenceDocument.objects.create(session=session, title=f"{who} ref", content=f"{text} ref")
    preset = TeamPreset.objects.create(owner=owner, slug=f"{who.lower()}-secret", name=f"{who} secret preset", data={})
    ev.append_event(session_id=session.pk, kind="status", payload={"status": status})
    conversation = _owned_conversation(project, model, status=status, who=who, text=text)
    return {
        "conversation": conversation,
        "project": project,
        "session": session,
        "agent": agent,
        "criterion": criterion,
        "version": version,
        "reference": reference,
        "preset": preset,
    }


def _owned_conversation(project, model, *, status: str, who: str, text: str) -> Conversation:
    """A conversation (its hidden run in `status`) with a message, a handoff and a reply."""
    run = WritingSession.objects.create(project=project, title=f"{who} Secret Conversation", flow="conversation")
    WritingSession.objects.filter(pk=run.pk).update(status=status)
    triage = Agent.objects.create(session=run, name="Triage", role="triage", model=model, role_prompt=text)
    conversation = Conversation.objects.create(project=project, title=f"{who} Secret Conversation", session=run)
    Message.objects.create(conversation=conversation, exchange=1, position=1, role="user", content=f"{text} asks")
    reply = Message.objects.create(
        conversation=conversation, exchange=1, position=2, role="assistant", agent=triage, content=f"{text} reply"
    )
    ev.append_event(session_id=run.pk, kind="message", payload={"message_id": reply.pk})
    return conversation


def url_kwargs(pattern: URLPattern, world: dict) -> dict:
    """Fill every URL argument of a pattern with the owner's real ids; fail on an argument we do not know."""
    route = str(pattern.pattern)
    fillers = {
        "agent_pk": world["agent"].pk,
        "ref_pk": world["reference"].pk,
        "preset_pk": world["preset"].pk,
        "number": world["version"].number,
        "fmt": "md",
    }
    kwargs = {}
    for name in pattern.pattern.converters:
        if name == "pk" and route.startswith("projects/<int:pk>"):
            kwargs[name] = world["project"].pk
        elif name == "pk" and route.startswith("sessions/<int:pk>"):
            kwargs[name] = world["session"].pk
        elif name == "pk" and route.startswith("conversations/<int:pk>"):
            kwargs[name] = world["conversation"].pk
        elif name == "agent_pk" and route.startswith("conversations/"):
            kwargs[name] = world["conversation"].session.agents.get(role="triage").pk  # the team page's agents
        elif name == "project_pk":
            kwargs[name] = world["project"].pk
        elif name in fillers:
            kwargs[name] = fillers[name]
        else:
            pytest.fail(f"URL pattern {route!r} ({pattern.name}) takes {name!r}: teach test_ownership how to fill it")
    return kwargs


def owner_rows(owner) -> dict[str, list[dict]]:
    """Every row that belongs to the owner (and the shipped presets), field by field."""
    from billing.models import CreditEntry

    by_session = Q(session__project__owner=owner)
    querysets = {
        "projects": Project.objects.filter(owner=owner),
        "sessions": WritingSession.objects.filter(project__owner=owner),
        "agents": Agent.objects.filter(by_session),
        "criteria": Criterion.objects.filter(agent__session__project__owner=owner),
        "turns": Turn.objects.filter(by_session),
        "versions": DocumentVersion.objects.filter(by_session),
        "references": ReferenceDocument.objects.filter(by_session),
        "events": SessionEvent.objects.filter(by_session),
        "presets": TeamPreset.objects.filter(Q(owner=owner) | Q(owner=None)),
        "credits": CreditEntry.objects.filter(user=owner),
        "conversations": Conversation.objects.filter(project__owner=owner),
        "messages": Message.objects.filter(conversation__project__owner=owner),
    }
    return {name: list(qs.order_by("pk").values()) for name, qs in querysets.items()}


def table_sizes() -> dict[str, int]:
    models = [Project, WritingSession, Agent, Criterion, Turn, DocumentVersion, ReferenceDocument, SessionEvent]
    models += [Conversation, Message]
    return {m.__name__: m.objects.count() for m in models + [TeamPreset]}


def requests_for(client: Client, url: str):
    """The same URL as a page load, a form post, and both over htmx."""
    htmx = {"HX-Request": "true", "HX-Current-URL": "http://testserver/dashboard/"}
    yield "GET", client.get(url)
    yield "GET htmx", client.get(url, headers=htmx)
    yield "POST", client.post(url, HOSTILE_POST)
    yield "POST htmx", client.post(url, HOSTILE_POST, headers=htmx)


OWNED_PATTERNS = [p for p in urlpatterns if p.pattern.converters]
OPEN_PATTERNS = [p for p in urlpatterns if not p.pattern.converters]


def test_the_walk_covers_every_orchestration_url():
    # A guard against the lists above silently going empty if urls.py changes shape.
    assert len(OWNED_PATTERNS) >= 30
    assert {p.name for p in OPEN_PATTERNS} >= {"dashboard", "project_create", "preset_list"}
    assert all(isinstance(p, URLPattern) for p in urlpatterns)


@pytest.mark.parametrize("status", [Status.DRAFT, Status.PAUSED, Status.COMPLETED])
@pytest.mark.parametrize("pattern", OWNED_PATTERNS, ids=lambda p: p.name)
def test_an_outsider_gets_404_on_every_url_with_the_owners_ids(client, owner, outsider, pattern, status):
    world = owned_world(owner, status=status)
    url = reverse(pattern.name, kwargs=url_kwargs(pattern, world))
    client.force_login(outsider)
    rows_before, sizes_before = owner_rows(owner), table_sizes()

    statuses = {}
    for label, response in requests_for(client, url):
        statuses[label] = response.status_code
        assert response.status_code in (404, 405), f"{label} {url} answered {response.status_code}"
        body = response.content.decode(errors="replace")
        assert not any(secret in body for secret in SECRETS), f"{label} {url} leaked the owner's data"

    # At least one method reached the owner check (a view that is 405 to everything proves nothing).
    assert 404 in statuses.values(), statuses
    assert owner_rows(owner) == rows_before, f"{url} changed the owner's data"
    assert table_sizes() == sizes_before, f"{url} created or deleted rows"


@pytest.mark.parametrize("pattern", OPEN_PATTERNS, ids=lambda p: p.name)
def test_urls_without_ids_show_the_outsider_only_their_own_things(client, owner, outsider, pattern):
    from orchestration.presets import seed_presets

    owned_world(owner, status=Status.PAUSED)
    seed_presets()  # as after migrate; the demo quickstart would otherwise seed them itself
    client.force_login(outsider)
    rows_before = owner_rows(owner)

    for label, response in requests_for(client, reverse(pattern.name)):
        assert response.status_code < 500, f"{label} {pattern.name} answered {response.status_code}"
        body = response.content.decode(errors="replace")
        assert not any(secret in body for secret in SECRETS), f"{label} {pattern.name} leaked the owner's data"

    assert owner_rows(owner) == rows_before


def test_a_shipped_preset_cannot_be_deleted_by_a_user(client, outsider, owner):
    from orchestration.presets import seed_presets

    catalogue_model("demo", "demo-writer", output="0", name="Demo writer")
    seed_presets()
    shipped = TeamPreset.objects.get(owner=None, slug="academic-writer-critical-editor")
    client.force_login(outsider)

    assert client.post(reverse("preset_delete", args=[shipped.pk])).status_code == 404
    assert TeamPreset.objects.filter(pk=shipped.pk).exists()


def test_an_outsider_cannot_reach_owner_rows_through_their_own_forms(client, owner, outsider):
    """Ids in a form body are owner-scoped too: the outsider's own agent form cannot edit the owner's criterion."""
    world = owned_world(owner, status=Status.DRAFT)
    theirs = owned_world(outsider, status=Status.DRAFT, who="Outsider")
    client.force_login(outsider)
    rows_before = owner_rows(owner)
    agent = theirs["agent"]
    prefix = f"agent-{agent.pk}"

    client.post(
        reverse("agent_update", args=[theirs["session"].pk, agent.pk]),
        {
            f"{prefix}-name": "Mine",
            f"{prefix}-role": "writer",
            f"{prefix}-model": str(agent.model_id),
            f"{prefix}-role_prompt": "Write.",
            f"{prefix}-temperature": "0.5",
            f"{prefix}-max_output_tokens": "1024",
            f"{prefix}-criteria-TOTAL_FORMS": "1",
            f"{prefix}-criteria-INITIAL_FORMS": "1",
            f"{prefix}-criteria-MIN_NUM_FORMS": "0",
            f"{prefix}-criteria-MAX_NUM_FORMS": "1000",
            f"{prefix}-criteria-0-id": str(world["criterion"].pk),
            f"{prefix}-criteria-0-agent": str(world["agent"].pk),
            f"{prefix}-criteria-0-name": "Stolen",
            f"{prefix}-criteria-0-weight": "9",
        },
    )
    client.post(reverse("session_preset_apply", args=[theirs["session"].pk]), {"preset": world["preset"].pk})
    client.post(reverse("session_create", args=[theirs["project"].pk]), {"title": "T", "preset": world["preset"].pk})

    assert owner_rows(owner) == rows_before
    assert not Criterion.objects.filter(agent__session__project__owner=outsider, name="Clarity", weight=9).exists()
    assert not Agent.objects.filter(session__project__owner=outsider, name="Owner Secret Agent").exists()


# --- Billing pages -----------------------------------------------------------------------------


def test_billing_pages_show_only_the_viewers_own_ledger(client, owner, outsider):
    from billing.services import grant_credits, reserve_credits, settle_credits

    world = owned_world(owner, status=Status.COMPLETED)
    turn = world["session"].turns.get()
    Turn.objects.filter(pk=turn.pk).update(model_used="owner-secret-model")
    grant_credits(user=owner, amount=7777, key="test:owner-grant", description="Owner secret top-up")
    reserve_credits(user=owner, amount=300, key="test:reserve", session_id=world["session"].pk, turn_id=turn.pk)
    settle_credits(
        user=owner, reservation_key="test:reserve", actual=123, key="test:settle", description="Owner secret usage"
    )
    grant_credits(user=outsider, amount=5, key="test:outsider-grant", description="Outsider's own grant")
    client.force_login(outsider)

    for name in ("billing", "pricing"):
        response = client.get(reverse(name))
        assert response.status_code == 200
        body = response.content.decode()
        for secret in (
            *SECRETS,
            "Owner secret top-up",
            "Owner secret usage",
            "owner-secret-model",
            "owner@example.com",
        ):
            assert secret not in body, f"{name} shows the owner's {secret!r}"
        assert f"/sessions/{world['session'].pk}/" not in body
    assert "Outsider&#x27;s own grant" in client.get(reverse("billing")).content.decode()


# --- The WebSocket -----------------------------------------------------------------------------


def _session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def _communicator(session_id: int, cookie: str | None = None):
    """A WebSocket through the whole ASGI stack: origin check, session cookie auth, routing."""
    from channels.testing import WebsocketCommunicator

    from atelier.asgi import application

    headers = [(b"origin", b"http://testserver")]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, f"/ws/sessions/{session_id}/", headers=headers)


def _streaming_session(owner) -> tuple[WritingSession, Turn]:
    world = owned_world(owner, status=Status.RUNNING)
    session, agent = world["session"], world["agent"]
    turn = Turn.objects.create(session=session, round=2, agent=agent, agent_name=agent.name, model_used="demo-writer")
    ev.append_events(
        session_id=session.pk,
        events=[
            ev.NewEvent("turn_started", {"turn_id": turn.pk}, turn.pk),
            ev.NewEvent("chunk", {"text": "Streamed "}, turn.pk),
            ev.NewEvent("chunk", {"text": "so far."}, turn.pk),
        ],
        broadcast=False,
    )
    session.refresh_from_db()
    return session, turn


@pytest.mark.django_db(transaction=True)
async def test_websocket_refuses_an_outsider_with_4403(owner, outsider):
    session, _ = await sync_to_async(_streaming_session)(owner)
    cookie = await sync_to_async(_session_cookie)(outsider)

    communicator = _communicator(session.pk, cookie)
    connected, code = await communicator.connect()

    assert (connected, code) == (False, 4403)
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_refuses_an_anonymous_visitor(owner):
    session, _ = await sync_to_async(_streaming_session)(owner)

    communicator = _communicator(session.pk)
    connected, code = await communicator.connect()

    assert (connected, code) == (False, 4403)
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_websocket_refuses_a_session_that_does_not_exist(owner):
    cookie = await sync_to_async(_session_cookie)(owner)
    communicator = _communicator(987654, cookie)
    connected, code = await communicator.connect()
    assert (connected, code) == (False, 4403)
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_owner_websocket_catches_up_with_everything_after_a_sequence(owner):
    session, turn = await sync_to_async(_streaming_session)(owner)
    cookie = await sync_to_async(_session_cookie)(owner)
    communicator = _communicator(session.pk, cookie)
    connected, _ = await communicator.connect()
    assert connected

    await communicator.send_json_to({"type": "catch_up", "after": 0})
    reply = await communicator.receive_json_from(timeout=5)

    assert reply["type"] == "events"
    assert reply["last_seq"] == session.last_seq == 4
    assert reply["status"] == Status.RUNNING
    card = next(f for f in reply["fragments"] if f["target"] == f"turn-{turn.pk}")
    assert "Streamed so far." in card["html"]
    assert card["swap"] == "upsert" and card["round"] == 2

    # Nothing new after the last sequence: an empty, position-keeping answer.
    await communicator.send_json_to({"type": "catch_up", "after": 4})
    reply = await communicator.receive_json_from(timeout=5)
    # It also says no worker is driving this running session (no lease): the page shows that.
    assert reply == {"type": "events", "last_seq": 4, "status": Status.RUNNING, "worker": "lost", "fragments": []}
    await communicator.disconnect()


BAD_INPUT = [
    ("text", "this is not json"),
    ("text", "[1, 2, 3]"),
    ("text", '"catch_up"'),
    ("text", json.dumps({"type": "subscribe", "session": 1})),
    ("text", json.dumps({"after": 0})),
    ("text", json.dumps({"type": "catch_up", "after": -1})),
    ("text", json.dumps({"type": "catch_up", "after": "3"})),
    ("text", json.dumps({"type": "catch_up", "after": True})),
    ("text", json.dumps({"type": "catch_up", "after": 1.5})),
    ("text", json.dumps({"type": "catch_up", "after": 10**30})),
    ("text", json.dumps({"type": "catch_up", "after": 0, "pad": "x" * 100_000})),
    ("bytes", b"\x00\x01binary"),
    # Deep nesting under the 4096-byte cap crashed the connection with a RecursionError (issue 9, case 11).
    ("text", "[" * 4000),
    ("text", '{"a":' * 800),
    ("text", '{"type": "catch_up", "after": 0, "x": ' + "[" * 1500 + "]" * 1500 + "}"),
]


@pytest.mark.django_db(transaction=True)
async def test_bad_websocket_input_gets_a_clear_error_and_the_connection_stays_open(owner):
    session, _ = await sync_to_async(_streaming_session)(owner)
    cookie = await sync_to_async(_session_cookie)(owner)
    communicator = _communicator(session.pk, cookie)
    connected, _ = await communicator.connect()
    assert connected

    for kind, data in BAD_INPUT:
        if kind == "bytes":
            await communicator.send_to(bytes_data=data)
        else:
            await communicator.send_to(text_data=data)
        reply = await communicator.receive_json_from(timeout=5)
        assert reply["type"] == "error", (data[:60], reply)
        assert reply["error"] and "Traceback" not in reply["error"]

    # Still connected and still useful after all that; brackets inside a string are just text.
    await communicator.send_to(text_data='{"type": "catch_up", "after": 0, "note": "' + "[" * 3000 + '"}')
    reply = await communicator.receive_json_from(timeout=5)
    assert reply["type"] == "events" and reply["last_seq"] == 4, reply
    await communicator.disconnect()


def test_staff_open_any_sessions_live_page_read_only_and_nobody_else_does(client, owner, outsider):
    """The admin's "View on site" works for staff, without the owner's controls; outsiders still get 404."""
    from django.urls import reverse

    from tests.conftest import make_user

    world = owned_world(owner, status=Status.RUNNING)
    session = world["session"]
    url = reverse("session_detail", args=[session.pk])
    client.force_login(outsider)
    assert client.get(url).status_code == 404
    assert client.get(reverse("session_events", args=[session.pk])).status_code == 404

    client.force_login(make_user("ops@example.com", is_staff=True))
    response = client.get(url)
    html = response.content.decode()
    assert response.status_code == 200 and 'data-testid="staff-view"' in html
    assert "Owner Secret Session" in html
    for control in ('data-testid="pause"', 'data-testid="stop"', 'data-testid="human-edit-form"'):
        assert control not in html
    assert client.get(reverse("session_events", args=[session.pk])).status_code == 200
    # Read-only means read-only: the owner's write endpoints stay closed to staff.
    assert client.post(reverse("session_stop", args=[session.pk])).status_code == 404
    session.refresh_from_db()
    assert session.status == Status.RUNNING


def test_staff_read_the_document_panel_but_cannot_edit_it(client, owner):
    from django.urls import reverse

    from tests.conftest import make_user

    session = owned_world(owner, status=Status.PAUSED)["session"]
    client.force_login(make_user("ops@example.com", is_staff=True))
    page = client.get(reverse("document_page", args=[session.pk]))
    assert page.status_code == 200 and 'data-testid="human-edit-form"' not in page.content.decode()
    response = client.post(reverse("document_edit", args=[session.pk]), {"document": "Hacked", "note": "x"})
    assert response.status_code == 404
    session.refresh_from_db()
    assert session.document != "Hacked"


@pytest.mark.django_db(transaction=True)
async def test_staff_may_watch_a_session_over_the_websocket(owner):
    from tests.conftest import make_user

    session, _ = await sync_to_async(_streaming_session)(owner)
    staff = await sync_to_async(make_user)("ops@example.com", is_staff=True)
    communicator = _communicator(session.pk, await sync_to_async(_session_cookie)(staff))
    connected, _code = await communicator.connect()
    assert connected
    await communicator.disconnect()


def _conversation_communicator(conversation_id: int, cookie: str | None = None):
    from channels.testing import WebsocketCommunicator

    from atelier.asgi import application

    headers = [(b"origin", b"http://testserver")]
    if cookie:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    return WebsocketCommunicator(application, f"/ws/conversations/{conversation_id}/", headers=headers)


@pytest.mark.django_db(transaction=True)
async def test_conversation_websocket_streams_to_the_owner_only(owner, outsider):
    world = await sync_to_async(owned_world)(owner, status=Status.COMPLETED)
    conversation = world["conversation"]
    for user in (outsider, None):
        cookie = await sync_to_async(_session_cookie)(user) if user else None
        communicator = _conversation_communicator(conversation.pk, cookie)
        assert await communicator.connect() == (False, 4403)
        await communicator.disconnect()

    communicator = _conversation_communicator(conversation.pk, await sync_to_async(_session_cookie)(owner))
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"type": "catch_up", "after": 0})
    reply = await communicator.receive_json_from(timeout=5)
    assert reply["type"] == "events" and reply["fragments"][-1]["op"] == "controls"
    await communicator.disconnect()


def test_an_outsider_cannot_find_the_owners_conversations_by_search(client, owner, outsider):
    owned_world(owner, status=Status.COMPLETED)
    for user, found in ((outsider, False), (owner, True)):
        client.force_login(user)
        body = client.get(reverse("conversation_list"), {"q": "Secret"}).content.decode()
        assert ("Owner Secret Conversation" in body) is found
        body = client.get(reverse("conversation_list"), {"q": "asks"}).content.decode()
        assert ("Owner Secret Conversation" in body) is found
