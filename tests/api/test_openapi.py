"""The OpenAPI document and the interactive docs: served by Atelier itself, nothing from a CDN."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def test_the_openapi_document_lists_every_resource_with_the_error_shape(client):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["info"]["title"] == "Atelier API"
    paths = schema["paths"]
    for path in [
        "/api/v1/projects",
        "/api/v1/sessions",
        "/api/v1/sessions/{session_id}/start",
        "/api/v1/sessions/{session_id}/turns",
        "/api/v1/sessions/{session_id}/document",
        "/api/v1/sessions/{session_id}/export",
        "/api/v1/models",
        "/api/v1/usage",
    ]:
        assert path in paths, path
    error = schema["components"]["schemas"]["Error"]
    assert {"status", "code", "message", "errors"} <= set(error["properties"])
    assert "402" in paths["/api/v1/sessions"]["post"]["responses"]
    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())


def test_the_docs_page_loads_swagger_from_our_own_static_files(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(s.endswith("swagger-ui-bundle.js") for s in sources)
    assert all(not s.startswith(("http:", "https:", "//")) for s in sources), sources
    # No CDN host anywhere, the swagger settings included (django-ninja's default is cdn.jsdelivr.net). Not a bare
    # "cdn": the page's random CSRF token held those three letters once in a few hundred runs.
    assert not re.search(r"cdn\.|jsdelivr|unpkg|cdnjs", html, re.IGNORECASE), html
