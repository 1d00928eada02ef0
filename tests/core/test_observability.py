"""Observable in production (issue 16): structured logs with bound context and no secrets or document text,
metrics at /metrics for staff or a token, and secrets read from files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from atelier.core.logs import ContextFilter, JsonFormatter, PlainFormatter, bound, redact, reset_secrets_cache
from atelier.env import env_secret
from tests.conftest import make_user

ROOT = Path(django_settings.BASE_DIR)

# --- secrets from files ------------------------------------------------------------------------------------


def test_env_secret_reads_the_file_strips_the_newline_and_refuses_ambiguity(tmp_path, monkeypatch):
    secret_file = tmp_path / "key"
    secret_file.write_text("s3cret-from-a-file\n")
    monkeypatch.delenv("ATELIER_DEMO_KEY", raising=False)
    monkeypatch.setenv("ATELIER_DEMO_KEY_FILE", str(secret_file))
    assert env_secret("ATELIER_DEMO_KEY") == "s3cret-from-a-file"

    monkeypatch.setenv("ATELIER_DEMO_KEY", "from-env")
    with pytest.raises(ImproperlyConfigured, match="Set ATELIER_DEMO_KEY or ATELIER_DEMO_KEY_FILE, not both"):
        env_secret("ATELIER_DEMO_KEY")

    monkeypatch.delenv("ATELIER_DEMO_KEY")
    monkeypatch.setenv("ATELIER_DEMO_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match=r"ATELIER_DEMO_KEY_FILE=.*missing cannot be read"):
        env_secret("ATELIER_DEMO_KEY")

    monkeypatch.delenv("ATELIER_DEMO_KEY_FILE")
    monkeypatch.setenv("ATELIER_DEMO_KEY", "plain-env")
    assert env_secret("ATELIER_DEMO_KEY") == "plain-env"


def _settings_in_subprocess(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    code = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps({'secret': s.SECRET_KEY, 'openai': s.PROVIDERS['openai']['api_key'], "
        "'anthropic': s.PROVIDERS['anthropic']['api_key'], 'stripe': s.STRIPE_TEST_SECRET_KEY, "
        "'live': s.STRIPE_LIVE_SECRET_KEY, 'metrics': s.METRICS_TOKEN}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_SECRET_KEY")) and k != "SECRET_KEY"}
    full = {
        **base,
        "DJANGO_SETTINGS_MODULE": "atelier.settings",
        "ATELIER_ENV": "development",
        "ATELIER_VAR_DIR": str(tmp_path / "var"),
        **env,
    }
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def test_settings_read_secret_key_provider_stripe_and_metrics_secrets_from_files(tmp_path):
    values = {
        "SECRET_KEY": "k" * 30 + "Kq9-Zx8_Yw7" * 3,
        "OPENAI_API_KEY": "sk-file-openai-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-file-0123456789",
        "STRIPE_TEST_SECRET_KEY": "sk_test_fromafile0123456789",
        "STRIPE_LIVE_SECRET_KEY": "sk_live_fromafile0123456789",
        "METRICS_TOKEN": "metrics-token-from-a-file",
    }
    env = {}
    for name, value in values.items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n")
        env[f"{name}_FILE"] = str(path)
    result = _settings_in_subprocess(env, tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {
        "secret": values["SECRET_KEY"],
        "openai": values["OPENAI_API_KEY"],
        "anthropic": values["ANTHROPIC_API_KEY"],
        "stripe": values["STRIPE_TEST_SECRET_KEY"],
        "live": values["STRIPE_LIVE_SECRET_KEY"],
        "metrics": values["METRICS_TOKEN"],
    }


def test_production_refuses_a_weak_key_from_a_file_without_printing_it(tmp_path):
    path = tmp_path / "key"
    path.write_text("short-weak-key\n")
    result = _settings_in_subprocess(
        {"ATELIER_ENV": "production", "SECRET_KEY_FILE": str(path), "ALLOWED_HOSTS": "example.com"}, tmp_path
    )
    assert result.returncode != 0
    assert "SECRET_KEY is missing or weak" in result.stderr
    assert "short-weak-key" not in result.stderr


# --- logs --------------------------------------------------------------------------------------------------


class Capture(logging.Handler):
    """Every record, formatted as production (JSON) and development (plain) would write it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.addFilter(ContextFilter())
        self.json = JsonFormatter()
        self.plain = PlainFormatter()
        self.lines: list[str] = []
        self.entries: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.json.format(record)
        self.entries.append(json.loads(line))
        self.lines += [line, self.plain.format(record)]


@pytest.fixture
def captured():
    handler = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # everything our code logs, even below the production level
    reset_secrets_cache()
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)
    reset_secrets_cache()


def test_redact_removes_configured_secrets_and_key_shaped_strings(settings):
    settings.METRICS_TOKEN = "a-metrics-token-value"
    reset_secrets_cache()
    text = redact("token a-metrics-token-value and sk-ant-api03-abcdefghijklmnop1234 and sk_live_abcdefghijklmnop12")
    assert "a-metrics-token-value" not in text and "sk-ant-api03" not in text and "sk_live_" not in text
    assert text.count("[redacted]") == 3
    reset_secrets_cache()


def test_records_carry_bound_fields_in_json_and_plain(captured):
    log = logging.getLogger("orchestration.test")
    with bound(request_id="req-1", user_id=7), bound(session_id=42, turn_id=9):
        log.info("turn %s started", 9)
    log.info("unbound")
    entry = next(e for e in captured.entries if e["message"] == "turn 9 started")
    assert (entry["request_id"], entry["user_id"], entry["session_id"], entry["turn_id"]) == ("req-1", 7, 42, 9)
    assert entry["level"] == "INFO" and entry["logger"] == "orchestration.test" and entry["ts"].endswith("+00:00")
    assert any("turn 9 started [request_id=req-1 user_id=7 session_id=42 turn_id=9]" in line for line in captured.lines)
    unbound = next(e for e in captured.entries if e["message"] == "unbound")
    assert unbound["request_id"] is None and unbound["session_id"] is None


def test_a_request_gets_an_id_in_its_logs_and_response_header(client, db, captured):
    response = client.get(reverse("healthz"), HTTP_X_REQUEST_ID="proxy-abc-123")
    assert response["X-Request-ID"] == "proxy-abc-123"
    generated = client.get(reverse("healthz"), HTTP_X_REQUEST_ID="bad id with spaces")["X-Request-ID"]
    assert len(generated) == 32 and generated != "bad id with spaces"


def test_a_signed_in_request_binds_the_user_id(client, db, captured, settings):
    from django.urls import path

    user = make_user("logger@example.com")
    client.force_login(user)

    def view(request):
        from django.http import HttpResponse

        logging.getLogger("orchestration.views.probe").warning("probe")
        return HttpResponse("ok")

    import atelier.urls as root_urls

    settings.ROOT_URLCONF = type("U", (), {"urlpatterns": [path("probe/", view)] + root_urls.urlpatterns})
    response = client.get("/probe/", HTTP_X_REQUEST_ID="req-user-1")
    assert response.status_code == 200
    entry = next(e for e in captured.entries if e["message"] == "probe")
    assert entry["request_id"] == "req-user-1" and entry["user_id"] == user.pk


@pytest.mark.django_db(transaction=True)
def test_engine_logs_carry_session_and_turn_and_never_secrets_or_document_text(fake_llm, settings, captured, owner):
    from billing.services import grant_credits
    from orchestration import engine, services
    from orchestration.models import ReferenceDocument
    from orchestration.providers import clear_adapter_cache
    from tests.orchestration.engine_helpers import on_pro_plan, scored_reply, two_agent_session

    key = "sk-test-LEAKCHECK-0123456789abcdef"
    settings.PROVIDERS = fake_llm.provider_settings(api_key=key)
    settings.PROVIDER_MAX_RETRIES = 2
    clear_adapter_cache()
    reset_secrets_cache()
    on_pro_plan(owner)
    grant_credits(user=owner, amount=1_000_000, key="test:obs", description="test credits")
    marker = "ZEBRA-MARKER-7781"
    session = two_agent_session(owner, max_rounds=1, document=f"# Draft\n\nA private paragraph {marker}.")
    session.brief = f"A brief that mentions {marker}."
    session.save()
    ReferenceDocument.objects.create(session=session, title="Notes", content=f"Reference text {marker}.")
    # A server error that echoes the key, then normal replies that quote the document.
    fake_llm.fail_next(500, message=f"upstream failed for key {key}")
    fake_llm.reply(*[scored_reply(f"# Draft\n\nRevised {marker}.", 7, 7)] * 2)
    services.start_session(session=session, user=owner)
    engine.drive(session.pk)
    session.refresh_from_db()
    assert session.status == "completed"

    retry = [e for e in captured.entries if e["message"].startswith("retrying ")]
    assert retry, "the retry after the 500 is logged"
    assert retry[0]["session_id"] == session.pk and retry[0]["turn_id"] is not None
    everything = "\n".join(captured.lines)
    assert marker not in everything
    assert key not in everything
    clear_adapter_cache()


# --- metrics -----------------------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def scrape(client, **headers) -> dict:
    response = client.get(reverse("metrics"), **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def test_metrics_need_staff_or_the_token(client, db, settings):
    settings.METRICS_TOKEN = "scrape-token-123"
    assert client.get(reverse("metrics")).status_code == 403
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    client.force_login(make_user("member@example.com"))
    assert client.get(reverse("metrics")).status_code == 403
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer scrape-token-123").status_code == 200
    client.force_login(make_user("ops@example.com", is_staff=True))
    values = scrape(client)
    assert ("atelier_active_sessions", (("status", "running"),)) in values
    assert ("atelier_queue_depth", ()) in values
    settings.METRICS_TOKEN = ""
    client.logout()
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer ").status_code == 403


def _value(values: dict, name: str, **labels) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.django_db(transaction=True)
def test_metrics_count_turns_tokens_credits_latency_and_provider_errors(fake_llm, settings, client, owner):
    from billing.services import grant_credits
    from orchestration import engine, services
    from orchestration.models import Turn
    from orchestration.providers import clear_adapter_cache
    from tests.orchestration.engine_helpers import counting_replies, on_pro_plan, two_agent_session

    settings.PROVIDERS = fake_llm.provider_settings()
    settings.PROVIDER_MAX_RETRIES = 2
    settings.METRICS_TOKEN = "scrape-token-456"
    clear_adapter_cache()
    auth = {"HTTP_AUTHORIZATION": "Bearer scrape-token-456"}
    before = scrape(client, **auth)
    on_pro_plan(owner)
    grant_credits(user=owner, amount=1_000_000, key="test:metrics", description="test credits")
    session = two_agent_session(owner, max_rounds=1)
    fake_llm.fail_next(529)
    fake_llm.reply(*[counting_replies()] * 2)
    services.start_session(session=session, user=owner)
    engine.drive(session.pk)
    after = scrape(client, **auth)
    clear_adapter_cache()

    writer = Turn.objects.get(session=session, agent_name="Writer", status="completed")
    labels = {"provider": "anthropic", "model": "claude-test"}
    turns = "atelier_turns_total"
    assert _value(after, turns, status="completed", **labels) - _value(before, turns, status="completed", **labels) == 1
    assert _value(after, turns, status="failed", **labels) - _value(before, turns, status="failed", **labels) == 1
    errors = "atelier_provider_errors_total"
    assert _value(after, errors, kind="overloaded", **labels) - _value(before, errors, kind="overloaded", **labels) == 1
    out = "atelier_tokens_total"
    assert _value(after, out, kind="output", **labels) - _value(before, out, kind="output", **labels) == (
        writer.output_tokens
    )
    credits = "atelier_credits_charged_total"
    spent = _value(after, credits, purpose="turn", **labels) - _value(before, credits, purpose="turn", **labels)
    assert spent == writer.credits > 0
    count = "atelier_provider_latency_seconds_count"
    assert _value(after, count, **labels) - _value(before, count, **labels) == 1
    editor = {"provider": "compatible", "model": "local-llama"}
    assert _value(after, turns, status="completed", **editor) - _value(before, turns, status="completed", **editor) == 1


@pytest.mark.django_db(transaction=True)
async def test_metrics_count_open_websockets_and_refused_ones_do_not_count(owner, outsider):
    from asgiref.sync import sync_to_async

    from atelier.core import metrics
    from tests.orchestration.test_ownership import _communicator, _session_cookie, _streaming_session

    def open_sockets() -> float:
        return samples(metrics.render().decode()).get(("atelier_websocket_connections", ()), 0.0)

    session, _ = await sync_to_async(_streaming_session)(owner)
    before = await sync_to_async(open_sockets)()
    refused = _communicator(session.pk, await sync_to_async(_session_cookie)(outsider))
    assert (await refused.connect())[0] is False
    await refused.disconnect()
    assert await sync_to_async(open_sockets)() == before
    communicator = _communicator(session.pk, await sync_to_async(_session_cookie)(owner))
    connected, _ = await communicator.connect()
    assert connected
    assert await sync_to_async(open_sockets)() == before + 1
    await communicator.disconnect()
    assert await sync_to_async(open_sockets)() == before


def test_clearing_the_metrics_directory_starts_counters_from_zero(tmp_path, monkeypatch):
    from atelier.core import metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_123.db").write_bytes(b"x")
    (tmp_path / "gauge_livesum_123.db").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("kept")
    assert metrics.clear_multiprocess_dir() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.django_db(transaction=True)
async def test_chat_websockets_count_like_live_page_ones(owner):
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from atelier.asgi import application
    from atelier.core import metrics
    from tests.orchestration.test_ownership import _session_cookie, owned_world

    def open_sockets() -> float:
        return samples(metrics.render().decode()).get(("atelier_websocket_connections", ()), 0.0)

    world = await sync_to_async(owned_world)(owner, status="completed")
    cookie = await sync_to_async(_session_cookie)(owner)
    before = await sync_to_async(open_sockets)()
    headers = [(b"origin", b"http://testserver"), (b"cookie", f"sessionid={cookie}".encode())]
    chat = WebsocketCommunicator(application, f"/ws/conversations/{world['conversation'].pk}/", headers=headers)
    connected, _ = await chat.connect()
    assert connected
    assert await sync_to_async(open_sockets)() == before + 1
    await chat.disconnect()
    assert await sync_to_async(open_sockets)() == before
