"""Keys, the cookie with CSRF, the one error shape, rate limits and idempotent retries, seen from a client."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from api.models import ApiKey, IdempotencyRecord
from orchestration.models import Project
from tests.api.conftest import ApiClient, assert_error, new_key

pytestmark = pytest.mark.django_db


def test_a_key_authenticates_its_owner_and_records_its_use(api, owner):
    response = api.get("me")
    assert response.status_code == 200
    body = response.json()
    assert body["email"] == owner.email and body["plan"] == "free"
    assert body["api_key"].startswith("atl_") and len(body["api_key"]) == 12
    key = ApiKey.objects.get(owner=owner)
    assert key.last_used_at is not None
    assert api.key not in (key.secret_hash, key.prefix)  # only the hash and the visible start are stored


@pytest.mark.parametrize(
    "header, message",
    [
        (None, "Authentication required"),
        ("Bearer nonsense", "Malformed API key"),
        ("Bearer atl_aaaaaaaa_wrongwrongwrongwrongwrongwrongwrongwrong", "Unknown API key"),
    ],
)
def test_requests_without_a_valid_key_are_401_with_the_reason(client, header, message):
    headers = {"Authorization": header} if header else {}
    body = assert_error(client.get("/api/v1/me", headers=headers), 401)
    assert message in body["message"]


def test_a_revoked_key_stops_working_at_once(api, owner):
    from api.services import revoke_api_key

    assert api.get("me").status_code == 200
    assert revoke_api_key(key=ApiKey.objects.get(owner=owner))
    body = assert_error(api.get("me"), 401, "invalid_api_key")
    assert "revoked" in body["message"]


def test_a_bad_key_never_falls_back_to_the_session_cookie(owner_client):
    response = owner_client.get("/api/v1/me", headers={"Authorization": "Bearer atl_aaaaaaaa_x"})
    assert_error(response, 401)


def test_the_browser_session_works_and_unsafe_methods_need_the_csrf_token(owner):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner)
    assert browser.get("/api/v1/me").json()["api_key"] is None
    refused = browser.post("/api/v1/projects", {"name": "X"}, content_type="application/json")
    assert_error(refused, 403, "csrf_failed")
    assert not Project.objects.filter(owner=owner).exists()
    browser.get("/")  # sets the csrftoken cookie, as any page does
    token = browser.cookies["csrftoken"].value
    created = browser.post(
        "/api/v1/projects", {"name": "X"}, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert created.status_code == 201, created.content


def test_unknown_urls_wrong_methods_and_bad_json_use_the_one_error_shape(api):
    assert_error(api.get("no-such-thing"), 404, "not_found")
    assert_error(api.get("projects/999999"), 404, "not_found")
    wrong = api.request("PUT", "me", {})
    assert_error(wrong, 405, "method_not_allowed")
    assert_error(api.post("projects", raw="{not json"), 400, "invalid_json")
    body = assert_error(api.post("projects", {"description": 5}), 422, "validation_error")
    fields = {e["field"] for e in body["errors"]}
    assert {"name", "description"} <= fields


def test_form_validation_errors_name_the_field(api):
    body = assert_error(api.post("projects", {"name": "x" * 201}), 422, "validation_error")
    assert body["errors"][0]["field"] == "name"
    assert "200" in body["errors"][0]["message"]


def test_an_unexpected_failure_is_a_json_500_that_shows_nothing_internal(api, monkeypatch):
    from orchestration import services

    def boom(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(services, "create_project", boom)
    api.client.raise_request_exception = False
    body = assert_error(api.post("projects", {"name": "X"}), 500, "server_error")
    assert "secret" not in body["message"]


def test_the_rate_limit_answers_429_with_retry_after_per_key(owner, monkeypatch):
    import types

    from api import auth
    from billing.plans import PLANS

    # The window is a fixed clock minute: pin the limiter's clock 15 s into one, or a slow machine's
    # 60 requests can straddle a minute boundary and land in two windows.
    clock = {"now": (time.time() // auth.WINDOW_SECONDS + 1) * auth.WINDOW_SECONDS + 15}
    monkeypatch.setattr(auth, "time", types.SimpleNamespace(time=lambda: clock["now"]))
    limit = PLANS["free"].api_requests_per_minute
    first, second = ApiClient(new_key(owner, "a")), ApiClient(new_key(owner, "b"))
    for _ in range(limit):
        assert first.get("me").status_code == 200
    refused = first.get("me")
    body = assert_error(refused, 429, "rate_limited")
    assert int(refused["Retry-After"]) == 45  # seconds to the end of the minute
    assert body["retry_after"] == 45
    assert second.get("me").status_code == 200  # per key: the other key has its own window
    clock["now"] += 44
    assert_error(first.get("me"), 429, "rate_limited")  # still the same minute
    clock["now"] += 1
    assert first.get("me").status_code == 200  # the next minute is a new window


def test_an_idempotent_retry_returns_the_first_result_and_creates_nothing_twice(api, owner):
    headers = {"Idempotency-Key": "create-essays-1"}
    first = api.post("projects", {"name": "Essays"}, headers=headers)
    retry = api.post("projects", {"name": "Essays"}, headers=headers)
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert Project.objects.filter(owner=owner).count() == 1


def test_the_same_idempotency_key_with_another_body_is_refused(api, owner):
    headers = {"Idempotency-Key": "k1"}
    assert api.post("projects", {"name": "Essays"}, headers=headers).status_code == 201
    assert_error(api.post("projects", {"name": "Other"}, headers=headers), 422, "idempotency_key_reused")
    assert Project.objects.filter(owner=owner).count() == 1


def test_a_failed_request_keeps_its_idempotency_key_free_for_the_fixed_retry(api, owner):
    headers = {"Idempotency-Key": "k2"}
    assert_error(api.post("projects", {"name": ""}, headers=headers), 422)
    assert not IdempotencyRecord.objects.exists()
    # A different body under the same key is fine now: nothing was stored for the failed one.
    assert api.post("projects", {"name": "Fixed"}, headers=headers).status_code == 201


def test_idempotency_keys_are_per_user(api, outsider_api, owner, outsider):
    headers = {"Idempotency-Key": "shared"}
    assert api.post("projects", {"name": "Mine"}, headers=headers).status_code == 201
    theirs = outsider_api.post("projects", {"name": "Mine"}, headers=headers)
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs
    assert Project.objects.filter(owner=outsider).count() == 1


def test_the_helper_for_views_outside_ninja_applies_the_same_rules(owner, owner_key, rf):
    """api.auth.authenticate_request: what the SSE views use (h3)."""
    from django.contrib.auth.models import AnonymousUser

    from api.auth import authenticate_request
    from api.errors import ApiError

    request = rf.get("/api/v1/sessions/1/events", HTTP_AUTHORIZATION=f"Bearer {owner_key}")
    request.user = AnonymousUser()
    assert authenticate_request(request) == owner and request.api_key.owner == owner
    anonymous = rf.get("/api/v1/sessions/1/events")
    anonymous.user = AnonymousUser()
    with pytest.raises(ApiError) as refused:
        authenticate_request(anonymous)
    assert refused.value.status == 401
    browser_post = rf.post("/api/v1/x")
    browser_post.user = owner
    with pytest.raises(ApiError) as refused:
        authenticate_request(browser_post)
    assert refused.value.code == "csrf_failed"


def test_an_authenticated_request_writes_nothing_and_reads_the_key_and_plan_once(api):
    """Key lookup (with its owner) and the plan's limit: no write per request (last_used_at is written
    at most once a minute; the rate counter lives in the cache)."""
    api.get("me")  # first use: records last_used_at and creates the credit account
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert api.get("projects").status_code == 200
    writes = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]
    assert not writes
    # key + owner, the plan's account, then the view's count and page of projects
    assert len(queries) <= 4, [q["sql"] for q in queries]
