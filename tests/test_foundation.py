"""Foundation promises: health reporting, production safety, security headers, error pages, admin access."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory

from atelier import env
from tests.conftest import make_user

BASE_DIR = Path(settings.BASE_DIR)


# --- /healthz --------------------------------------------------------------------------------


def _health(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


def test_healthz_is_503_and_says_why_when_no_worker_runs(transactional_db, client):
    from tests.live import wait_for

    # A worker stopped by an earlier test keeps reporting for a few seconds; wait until it expires.
    _status, body = wait_for(lambda: (r := _health(client))[0] == 503 and r, message="healthz to report 503")

    assert body["status"] == "degraded"
    assert body["checks"]["worker"]["ok"] is False
    assert "no worker" in body["checks"]["worker"]["error"]
    # The other dependencies are still reported, and are up.
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["channel_layer"] == {"ok": True}


def test_healthz_is_200_while_a_worker_runs_and_503_after_it_stops(transactional_db, client):
    from tests.live import start_worker, wait_for

    worker = start_worker()
    try:
        _status, body = wait_for(lambda: (r := _health(client))[0] == 200 and r, timeout=60, message="a healthy worker")
        assert body["status"] == "ok"
        assert body["checks"]["worker"]["ok"] is True
        assert body["checks"]["worker"]["clusters"] >= 1
        assert body["checks"]["database"]["ok"] and body["checks"]["channel_layer"]["ok"]
    finally:
        worker.stop()

    wait_for(lambda: _health(client)[0] == 503, timeout=30, message="healthz to notice the worker is gone")


def test_healthz_only_answers_get(client, db):
    assert client.post("/healthz").status_code == 405


# --- production configuration (subprocesses: settings are read once per process) ---------------


def _manage(*args: str, tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "ATELIER_VAR_DIR": str(tmp_path / "var"),
        # A Redis URL is enough for `check`; nothing connects, so no embedded server is started.
        "REDIS_URL": "redis://127.0.0.1:1/0",
        **env_vars,
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _production_env(**overrides: str) -> dict[str, str]:
    values = {
        "ATELIER_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "example.com",
        "DJANGO_DEBUG": "0",
        "EMAIL_HOST": "smtp.example.com",
    }
    values.update(overrides)
    return values


def test_check_deploy_is_clean_in_a_production_like_environment(tmp_path):
    result = _manage("check", "--deploy", "--fail-level", "WARNING", tmp_path=tmp_path, **_production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "secret_key",
    ["", "short-key", "django-insecure-" + "x" * 60, "a" * 60],
    ids=["missing", "short", "insecure-prefix", "not-varied"],
)
def test_production_refuses_to_start_with_a_missing_or_weak_secret_key(tmp_path, secret_key):
    result = _manage("check", tmp_path=tmp_path, **_production_env(SECRET_KEY=secret_key))
    assert result.returncode != 0
    assert "SECRET_KEY is missing or weak" in result.stderr


def test_production_refuses_to_start_with_the_console_email_backend(tmp_path):
    # Password-reset links would go to the logs (issue 9, case 12).
    environment = _production_env()
    del environment["EMAIL_HOST"]
    result = _manage("check", tmp_path=tmp_path, **environment)
    assert result.returncode != 0
    assert "Production has no mail server: set EMAIL_HOST" in result.stderr

    result = _manage(
        "check", tmp_path=tmp_path, **environment, EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend"
    )
    assert result.returncode != 0 and "Production has no mail server" in result.stderr

    allowed = _manage("check", tmp_path=tmp_path, **environment, ALLOW_CONSOLE_EMAIL="1")
    assert allowed.returncode == 0, allowed.stderr
    assert _manage("check", tmp_path=tmp_path, **_production_env()).returncode == 0


def test_development_generates_a_secret_key_once_and_keeps_it_private(tmp_path):
    first = _manage("check", tmp_path=tmp_path, ATELIER_ENV="development")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "var" / "secret_key"
    key = key_file.read_text()
    assert len(key) >= 50
    assert key_file.stat().st_mode & 0o077 == 0
    _manage("check", tmp_path=tmp_path, ATELIER_ENV="development")
    assert key_file.read_text() == key


def test_a_bad_environment_value_stops_the_process_with_a_clear_message(tmp_path):
    result = _manage("check", tmp_path=tmp_path, ATELIER_ENV="development", DJANGO_DEBUG="maybe")
    assert result.returncode != 0
    assert "DJANGO_DEBUG must be a boolean" in result.stderr

    result = _manage("check", tmp_path=tmp_path, ATELIER_ENV="staging")
    assert result.returncode != 0
    assert "ATELIER_ENV must be development, production or test" in result.stderr


_PRINT_SECURITY = (
    "import json; from django.conf import settings as s; print(json.dumps({k: getattr(s, k, None) for k in "
    "['DEBUG', 'SESSION_COOKIE_SECURE', 'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'SECURE_HSTS_SECONDS', "
    "'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_SSL_REDIRECT', 'SECURE_CONTENT_TYPE_NOSNIFF', 'X_FRAME_OPTIONS']}))"
)


def _security_settings(tmp_path: Path, **env_vars: str) -> dict:
    result = _manage("shell", "-c", _PRINT_SECURITY, tmp_path=tmp_path, **env_vars)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_uses_secure_cookies_and_hsts(tmp_path):
    values = _security_settings(tmp_path, **_production_env())
    assert values["DEBUG"] is False
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    assert values["SECURE_HSTS_SECONDS"] >= 31536000
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SECURE_CONTENT_TYPE_NOSNIFF"] is True
    assert values["X_FRAME_OPTIONS"] == "DENY"


def test_any_environment_with_debug_off_gets_secure_cookies(tmp_path):
    values = _security_settings(tmp_path, ATELIER_ENV="development", DJANGO_DEBUG="0")
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True


def test_development_with_debug_on_keeps_plain_http_cookies(tmp_path):
    values = _security_settings(tmp_path, ATELIER_ENV="development")
    assert values["DEBUG"] is True
    assert values["SESSION_COOKIE_SECURE"] is False


# --- env helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False)])
def test_env_bool_accepts_the_usual_spellings(monkeypatch, raw, expected):
    monkeypatch.setenv("ATELIER_T_BOOL", raw)
    assert env.env_bool("ATELIER_T_BOOL") is expected


def test_env_helpers_use_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("ATELIER_T_UNSET", raising=False)
    assert env.env_bool("ATELIER_T_UNSET", True) is True
    assert env.env_int("ATELIER_T_UNSET", 7) == 7
    assert env.env_float("ATELIER_T_UNSET", 1.5) == 1.5
    assert env.env_list("ATELIER_T_UNSET", ["a"]) == ["a"]
    assert env.env_str("ATELIER_T_UNSET", "x") == "x"


@pytest.mark.parametrize(
    ("helper", "raw", "kwargs", "message"),
    [
        (env.env_bool, "maybe", {}, "must be a boolean"),
        (env.env_int, "ten", {"default": 1}, "must be an integer"),
        (env.env_int, "3", {"default": 5, "minimum": 5}, "must be >= 5"),
        (env.env_int, "99", {"default": 5, "maximum": 64}, "must be <= 64"),
        (env.env_float, "fast", {"default": 1.0}, "must be a number"),
        (env.env_float, "-1", {"default": 1.0, "minimum": 0.0}, "must be >= 0.0"),
    ],
)
def test_env_helpers_fail_loudly_on_bad_values(monkeypatch, helper, raw, kwargs, message):
    monkeypatch.setenv("ATELIER_T_BAD", raw)
    with pytest.raises(ImproperlyConfigured, match=message) as excinfo:
        helper("ATELIER_T_BAD", **kwargs)
    assert "ATELIER_T_BAD" in str(excinfo.value)


def test_env_list_splits_and_trims(monkeypatch):
    monkeypatch.setenv("ATELIER_T_LIST", " a.com , b.com,, ")
    assert env.env_list("ATELIER_T_LIST", []) == ["a.com", "b.com"]


# --- security headers ---------------------------------------------------------------------------


def _csp_directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = {}
    for part in header.split(";"):
        name, *values = part.strip().split()
        directives[name] = values
    return directives


def test_pages_send_a_csp_without_unsafe_inline_scripts(client, db):
    response = client.get("/accounts/login/")
    directives = _csp_directives(response)
    assert directives["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert "'unsafe-eval'" not in response["Content-Security-Policy"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]


def test_pages_refuse_framing_and_sniffing(client, db):
    response = client.get("/accounts/login/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_hsts_header_is_sent_over_https_when_configured(client, db, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    response = client.get("/accounts/login/", secure=True)
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


# --- django-q2 admin is for superusers only ---------------------------------------------------------

Q_ADMIN_URLS = [
    "/admin/django_q/schedule/",
    "/admin/django_q/schedule/add/",
    "/admin/django_q/success/",
    "/admin/django_q/failure/",
]


@pytest.fixture
def staff_client(db):
    user = make_user("staff@example.com", is_staff=True)
    # Even every django_q permission must not open it: a Schedule's `func` runs any dotted path.
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="django_q"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser_client(db):
    user = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "x" * 20)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("url", Q_ADMIN_URLS)
def test_task_queue_admin_is_closed_to_staff_who_are_not_superusers(staff_client, url):
    response = staff_client.get(url)
    assert response.status_code in (302, 403)


def test_task_queue_admin_is_not_listed_for_staff(staff_client):
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    assert "/admin/django_q/" not in response.content.decode()


@pytest.mark.parametrize("url", Q_ADMIN_URLS)
def test_task_queue_admin_is_open_to_superusers(superuser_client, url):
    assert superuser_client.get(url).status_code == 200


def test_admin_requires_staff(client, db):
    client.force_login(make_user("plain@example.com"))
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# --- error pages -------------------------------------------------------------------------------------


def test_unknown_url_shows_the_styled_404_page(client, db, settings):
    settings.DEBUG = False
    response = client.get("/there-is-nothing-here/")
    html = response.content.decode()
    assert response.status_code == 404
    assert 'class="topbar"' in html
    assert "We couldn&#x27;t find that page" in html or "We couldn't find that page" in html
    assert "css/app.css" in html


def test_csrf_failure_shows_the_styled_403_page(db):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"login": "a@example.com", "password": "x"})
    html = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in html
    assert "This form expired" in html


@pytest.mark.parametrize(
    ("handler", "status", "text"),
    [("error_400", 400, "understand that request"), ("error_403", 403, "have access to this")],
)
def test_400_and_403_pages_are_styled(db, handler, status, text):
    from django.contrib.auth.models import AnonymousUser

    from atelier.core import views

    request = RequestFactory().get("/")
    request.user = AnonymousUser()
    response = getattr(views, handler)(request, Exception("x"))
    html = response.content.decode()
    assert response.status_code == status
    assert text in html.replace("&#x27;", "'")
    assert 'class="topbar"' in html


def test_500_page_renders_without_the_database():
    from atelier.core.views import error_500

    # No `db` fixture: pytest-django makes any query raise here, which is the point.
    response = error_500(RequestFactory().get("/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong" in html
    assert "css/app.css" in html
