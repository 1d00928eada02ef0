"""Production safety: settings refuse weak secrets and unsafe defaults; the environment helpers fail loudly."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from atelier import env

BASE_DIR = Path(settings.BASE_DIR)


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
