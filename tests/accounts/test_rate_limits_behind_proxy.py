"""Login rate limits key on the real client, behind the TLS proxy too (issue 9, case 9).

Behind the proxy every request comes from the proxy's address; the client is in X-Forwarded-For.
With BEHIND_TLS_PROXY set, settings trust exactly the proxies we run (allauth's
ALLAUTH_TRUSTED_PROXY_COUNT); without it, X-Forwarded-For is the client's own claim and ignored.
"""

from __future__ import annotations

import json
import secrets

import pytest
from django.urls import reverse

from tests.conftest import make_user
from tests.core.test_settings import _manage

PROXY = "10.0.0.2"
LIMITED = "Too many failed login attempts"


def _login(client, email: str, password: str, client_ip: str):
    return client.post(
        reverse("account_login"),
        {"login": email, "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=client_ip,
    )


def _attack(client, attacker_ip: str, times: int = 10) -> None:
    for _ in range(times):
        response = _login(client, f"{secrets.token_hex(4)}@example.com", "wrong password 123", attacker_ip)
        assert response.status_code == 200


@pytest.fixture
def behind_proxy(settings):
    # What settings.py sets with BEHIND_TLS_PROXY=1 (checked in a real process below).
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 1
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def test_behind_the_proxy_one_attacker_does_not_lock_out_another_user(client, behind_proxy, db):
    make_user("ann@example.com")
    make_user("bob@example.com")
    _attack(client, "203.0.113.66")

    response = _login(client, "ann@example.com", "correct horse battery staple", "198.51.100.7")
    assert response.status_code == 302 and response.url == reverse("dashboard")
    client.logout()
    # The attacker's own address is limited, even with a correct password.
    response = _login(client, "bob@example.com", "correct horse battery staple", "203.0.113.66")
    assert response.status_code == 200 and LIMITED in response.content.decode()


def test_without_the_proxy_setting_a_forged_forwarded_for_does_not_dodge_the_limit(client, settings, db):
    settings.ALLAUTH_TRUSTED_PROXY_COUNT = 0
    make_user("ann@example.com")
    for i in range(10):  # a new forged client address on every try: all count against REMOTE_ADDR
        _login(client, f"{secrets.token_hex(4)}@example.com", "wrong password 123", f"192.0.2.{i}")
    response = _login(client, "ann@example.com", "correct horse battery staple", "192.0.2.200")
    assert response.status_code == 200 and LIMITED in response.content.decode()


def _allauth_proxy_settings(tmp_path, **env) -> dict:
    code = (
        "import json; from allauth import app_settings as a; "
        "print(json.dumps([a.TRUSTED_PROXY_COUNT, a.TRUSTED_CLIENT_IP_HEADER]))"
    )
    result = _manage("shell", "-c", code, tmp_path=tmp_path, ATELIER_ENV="development", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_client_ip_is_taken_from_the_proxy_only_when_behind_tls_proxy_is_set(tmp_path):
    assert _allauth_proxy_settings(tmp_path) == [0, None]
    assert _allauth_proxy_settings(tmp_path, BEHIND_TLS_PROXY="1") == [1, None]
    assert _allauth_proxy_settings(tmp_path, BEHIND_TLS_PROXY="1", TRUSTED_PROXY_COUNT="2") == [2, None]
    assert _allauth_proxy_settings(tmp_path, BEHIND_TLS_PROXY="1", TRUSTED_CLIENT_IP_HEADER="X-Real-IP") == [
        1,
        "X-Real-IP",
    ]
    # A header is only trusted behind the proxy: without it, it would be the client's own claim.
    assert _allauth_proxy_settings(tmp_path, TRUSTED_CLIENT_IP_HEADER="X-Real-IP") == [0, None]
