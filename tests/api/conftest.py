"""API personas: an owner and an outsider, each with a key, and a client speaking JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from tests.studio_fixtures import *  # noqa: F403 - fixtures


class ApiClient:
    """A Django test client that sends ``Authorization: Bearer <key>`` and JSON bodies."""

    def __init__(self, key: str | None) -> None:
        self.client = Client()
        self.key = key

    def _headers(self, headers: dict[str, str] | None) -> dict[str, str]:
        out = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**out, **(headers or {})}

    def request(self, method: str, path: str, body: Any = None, *, headers=None, raw: str | None = None):
        url = path if path.startswith("/") else f"/api/v1/{path}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        kwargs: dict[str, Any] = {"headers": self._headers(headers)}
        if data is not None:
            kwargs.update(data=data, content_type="application/json")
        return getattr(self.client, method.lower())(url, **kwargs)

    def get(self, path: str, **params: Any):
        url = path if path.startswith("/") else f"/api/v1/{path}"
        return self.client.get(url, params, headers=self._headers(None))

    def post(self, path: str, body: Any = None, **kw: Any):
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any):
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any):
        return self.request("DELETE", path, **kw)


def new_key(user, name: str = "test key") -> str:
    from api.services import create_api_key

    return create_api_key(owner=user, name=name)[1]


@pytest.fixture
def owner_key(owner) -> str:
    return new_key(owner)


@pytest.fixture
def outsider_key(outsider) -> str:
    return new_key(outsider)


@pytest.fixture
def api(owner_key) -> ApiClient:
    return ApiClient(owner_key)


@pytest.fixture
def outsider_api(outsider_key) -> ApiClient:
    return ApiClient(outsider_key)


def assert_error(response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is the one error shape with this status (and code); returns the body."""
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], list)
    if code:
        assert body["code"] == code, body
    return body
