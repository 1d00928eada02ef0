"""Server-Sent Events through the real processes: daphne serving /api/v1/sessions/{id}/events to a
client holding an API key, a django-q2 worker running the demo provider, the channel layer between.

Connect, drop after N events, reconnect with Last-Event-ID (and ?after=): every event once, in
order, and each turn's streamed text equals the turn the database kept; heartbeats while idle; the
final event, then the stream closes; another user's session 404; a revoked key 401; the per-key
stream limit 429 with Retry-After, and a slot freed the moment its client goes."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest
from django.conf import settings

from orchestration import services
from orchestration.models import Status, Turn, WritingSession
from tests.live import start_app, start_web, wait_for
from tests.orchestration.test_cross_process import demo_session

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

# Heartbeats and polls every half second, so a stream's idle behaviour shows within seconds.
FAST_SSE = {"API_SSE_HEARTBEAT_SECONDS": "0.5", "API_SSE_POLL_SECONDS": "0.5"}


class Stream:
    """A minimal SSE client over http.client: parsed blocks as they arrive."""

    def __init__(self, url: str, path: str, key: str | None, headers: dict | None = None, timeout: float = 60):
        parts = urlparse(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        sent = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        self.conn.request("GET", path, headers=sent)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.closed_by_server = False

    def json(self) -> dict:
        return json.loads(self.response.read())

    def next_block(self) -> dict | None:
        """The next event or comment as {"id", "event", "data"} / {"comment"} / {"retry"}; None at the end."""
        block: dict = {}
        while True:
            line = self.response.readline()
            if not line:
                self.closed_by_server = True
                return None
            text = line.decode().rstrip("\n")
            if text == "":
                if block:
                    return block
                continue
            if text.startswith(":"):
                block["comment"] = text[1:].strip()
            else:
                name, _, value = text.partition(": ")
                block[name] = json.loads(value) if name == "data" else value

    def read(self, *, until=None, limit: int | None = None) -> list[dict]:
        """Blocks until the stream ends, `until(block)` is true, or `limit` events (with an id) arrived."""
        out: list[dict] = []
        while (block := self.next_block()) is not None:
            out.append(block)
            if until is not None and until(block):
                break
            if limit is not None and sum(1 for b in out if "id" in b) >= limit:
                break
        return out

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def events_path(session_id: int, after: int | None = None) -> str:
    return f"/api/v1/sessions/{session_id}/events" + (f"?after={after}" if after is not None else "")


def new_key(user, name: str = "stream key") -> str:
    from api.services import create_api_key

    return create_api_key(owner=user, name=name)[1]


@pytest.fixture
def app(transactional_db):
    # Paced demo tokens: a two-round run takes seconds, long enough to drop and resume mid-run.
    live = start_app(seed=False, env=FAST_SSE, DEMO_TOKENS_PER_SECOND="250")
    yield live
    live.stop()


@pytest.fixture
def web_only(transactional_db):
    """daphne alone (no worker): a queued session stays queued, so its stream idles."""
    live = start_app(seed=False, worker=False, env=FAST_SSE)
    yield live
    live.stop()


def data_events(blocks: list[dict]) -> list[dict]:
    return [b for b in blocks if "id" in b]


def test_a_client_that_drops_and_resumes_with_last_event_id_gets_every_event_once(app, owner):
    session = demo_session(owner, max_rounds=2)
    key = new_key(owner)
    services.start_session(session=session, user=owner)

    first = Stream(app.url, events_path(session.pk), key)
    assert first.status == 200 and first.response.getheader("Content-Type").startswith("text/event-stream")
    before = first.read(limit=12)
    first.close()  # the client drops mid-run
    last_id = data_events(before)[-1]["id"]

    second = Stream(app.url, events_path(session.pk), key, {"Last-Event-ID": last_id})
    after = second.read()
    assert second.closed_by_server, "the stream must close after its final event"
    second.close()

    events = data_events(before) + data_events(after)
    session.refresh_from_db()
    assert session.status == Status.COMPLETED
    ids = [int(e["id"]) for e in events]
    assert ids == list(range(1, session.last_seq + 1)), "lost or repeated events"
    assert any(e["event"] == "chunk" for e in data_events(after)), "the drop must happen mid-run"
    # The streamed text of each turn is exactly what the database kept for it, labelled with its agent.
    turns = list(Turn.objects.filter(session=session, kind=Turn.Kind.AGENT))
    assert len(turns) == 4
    for turn in turns:
        chunks = [e["data"] for e in events if e["event"] == "chunk" and e["data"]["turn_id"] == turn.pk]
        assert "".join(c["payload"]["text"] for c in chunks) == turn.output_text
        assert {c["agent"] for c in chunks} == {turn.agent_name}
    end = after[-1]
    assert end["event"] == "end" and "id" not in end
    assert end["data"]["status"] == "completed" and end["data"]["last_seq"] == session.last_seq

    # ?after= replays the same tail from the log of the finished run, then ends at once.
    mid = session.last_seq // 2
    replay = Stream(app.url, events_path(session.pk, after=mid), key)
    blocks = replay.read()
    replay.close()
    assert [int(e["id"]) for e in data_events(blocks)] == list(range(mid + 1, session.last_seq + 1))
    assert blocks[-1]["event"] == "end"


def test_an_idle_stream_sends_heartbeats_and_ends_with_the_run(web_only, owner):
    session = demo_session(owner)
    WritingSession.objects.filter(pk=session.pk).update(status=Status.QUEUED)  # no worker: it waits
    stream = Stream(web_only.url, events_path(session.pk), new_key(owner))
    assert stream.status == 200
    beats = stream.read(until=lambda b: b.get("comment") == "ping")
    assert beats[-1] == {"comment": "ping"}

    services.stop_session(session=WritingSession.objects.get(pk=session.pk))  # no executor: stopped at once
    rest = stream.read()
    assert stream.closed_by_server
    statuses = [e["data"]["payload"]["status"] for e in data_events(rest) if e["event"] == "status"]
    assert statuses[-1] == "stopped"
    assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "stopped"
    stream.close()


def test_streams_refuse_other_users_unknown_ids_revoked_keys_and_bad_positions(web_only, owner, outsider):
    from api.models import ApiKey
    from api.services import revoke_api_key

    session = demo_session(owner)
    owner_key, outsider_key = new_key(owner), new_key(outsider)

    for key, path in [(outsider_key, events_path(session.pk)), (owner_key, events_path(session.pk + 10_000))]:
        response = Stream(web_only.url, path, key)
        body = response.json()
        assert response.status == 404 and body["status"] == 404 and body["code"] == "not_found"
        response.close()

    anonymous = Stream(web_only.url, events_path(session.pk), None)
    assert anonymous.status == 401 and anonymous.json()["code"] == "unauthenticated"
    anonymous.close()

    for headers, path in [
        ({"Last-Event-ID": "abc"}, events_path(session.pk)),
        ({}, events_path(session.pk) + "?after=-3"),
        ({"Last-Event-ID": "999"}, events_path(session.pk)),  # past the session's last event
    ]:
        response = Stream(web_only.url, path, owner_key, headers)
        body = response.json()
        assert response.status == 400 and body["code"] == "invalid_position", body
        assert body["errors"] and body["errors"][0]["field"] == "after"
        response.close()

    revoke_api_key(key=ApiKey.objects.get(owner=owner))
    revoked = Stream(web_only.url, events_path(session.pk), owner_key)
    body = revoked.json()
    assert revoked.status == 401 and body["status"] == 401 and "revoked" in body["message"]
    revoked.close()


def test_the_plan_caps_streams_per_key_and_a_closed_stream_frees_its_slot_at_once(transactional_db, owner):
    from api.models import ApiKey
    from billing.plans import FREE, PLANS

    # A long heartbeat: a slot left behind would stay taken for three of them (90 s), so a new stream
    # opening within seconds proves the disconnect released it.
    web, url = start_web(API_SSE_HEARTBEAT_SECONDS="30")
    try:
        session = demo_session(owner)
        WritingSession.objects.filter(pk=session.pk).update(status=Status.QUEUED)
        key, other_key = new_key(owner), new_key(owner, "second key")
        limit = PLANS[FREE].api_concurrent_streams
        open_streams = [Stream(url, events_path(session.pk), key) for _ in range(limit)]
        assert [s.status for s in open_streams] == [200] * limit
        for stream in open_streams:
            stream.read(until=lambda b: "retry" in b)  # each is really streaming

        refused = Stream(url, events_path(session.pk), key)
        body = refused.json()
        assert refused.status == 429 and body["code"] == "too_many_streams" and body["status"] == 429
        assert int(refused.response.getheader("Retry-After")) >= 1
        assert str(limit) in body["message"]
        refused.close()

        other = Stream(url, events_path(session.pk), other_key)  # the limit is per key
        assert other.status == 200
        other.close()

        open_streams.pop().close()  # the client goes away

        def reopened():
            stream = Stream(url, events_path(session.pk), key)
            if stream.status == 200:
                return stream
            stream.close()
            return None

        again = wait_for(reopened, timeout=20, interval=0.2, message="the closed stream's slot to be free")
        again.close()
        for stream in open_streams:
            stream.close()

        # Nothing is left behind once every client has gone: no slot, no channel-layer membership.
        slots = f"{settings.CACHES['default']['KEY_PREFIX']}:api-streams:key:{ApiKey.objects.get(name='stream key').pk}"
        group = f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}:group:session-{session.pk}"
        wait_for(lambda: redis_members(slots) == 0 and redis_members(group) == 0, timeout=20, message="clean-up")
    finally:
        web.stop()


def redis_members(key: str) -> int:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return client.zcard(key)
    finally:
        client.close()


def _web_connections() -> int:
    """Connections to the test database other than this test's own."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_streams_and_refusals_leave_no_database_connection_behind(web_only, owner):
    """PostgreSQL: a waiting stream holds no connection, and none stays open after a stream or a refusal."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("counts server connections: PostgreSQL only")
    session = demo_session(owner)
    WritingSession.objects.filter(pk=session.pk).update(status=Status.QUEUED)
    key = new_key(owner)
    baseline = _web_connections()
    for _ in range(5):
        stream = Stream(web_only.url, events_path(session.pk), key)
        stream.read(until=lambda b: b.get("comment") == "ping")
        stream.close()
        refused = Stream(web_only.url, events_path(session.pk + 10_000), key)
        assert refused.status == 404
        refused.close()
    held = [Stream(web_only.url, events_path(session.pk), key) for _ in range(2)]
    for stream in held:
        stream.read(until=lambda b: b.get("comment") == "ping")  # idle, waiting for the run
    assert _web_connections() <= baseline
    for stream in held:
        stream.close()
    wait_for(lambda: _web_connections() <= baseline, timeout=10, message="no connection left behind")


def test_a_conversation_streams_its_reply_with_handoffs_labelled_by_agent(app, owner, outsider):
    """The Writing desk on the demo provider, run by the worker: triage hands off, the specialist answers."""
    from billing.services import grant_credits
    from orchestration.catalogue import seed_catalogue
    from orchestration.conversations import services as conversations
    from orchestration.conversations.models import Message
    from orchestration.models import Project

    seed_catalogue()
    grant_credits(user=owner, amount=100_000, key="test:conversation", description="test credits")
    conversation = conversations.create_conversation(
        project=Project.objects.create(owner=owner, name="Desk"), user=owner
    )
    key = new_key(owner)
    path = f"/api/v1/conversations/{conversation.pk}/events"
    conversations.send_message(conversation=conversation, user=owner, text="Please tighten this paragraph for me.")

    stream = Stream(app.url, path, key)
    assert stream.status == 200
    blocks = stream.read()
    stream.close()
    assert stream.closed_by_server and blocks[-1]["event"] == "end"
    assert blocks[-1]["data"]["status"] == "completed"
    events = data_events(blocks)
    session_id = conversation.session_id
    assert [int(e["id"]) for e in events] == list(range(1, WritingSession.objects.get(pk=session_id).last_seq + 1))
    turns = list(Turn.objects.filter(session_id=session_id, kind=Turn.Kind.AGENT))
    assert len(turns) >= 2, "triage and a specialist"
    for turn in turns:
        chunks = [e["data"] for e in events if e["event"] == "chunk" and e["data"]["turn_id"] == turn.pk]
        assert "".join(c["payload"]["text"] for c in chunks) == turn.output_text
        assert {c["agent"] for c in chunks} <= {turn.agent_name}
    announced = {e["data"]["payload"]["message_id"] for e in events if e["event"] == "message"}
    roles = set(Message.objects.filter(pk__in=announced).values_list("role", flat=True))
    assert {"handoff", "assistant"} <= roles

    # Another user's key, and the hidden run behind the conversation as a "session": 404.
    for who, url_path in [(new_key(outsider), path), (key, events_path(session_id))]:
        refused = Stream(app.url, url_path, who)
        assert refused.status == 404 and refused.json()["code"] == "not_found"
        refused.close()
