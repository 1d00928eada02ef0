"""The public API, version 1, mounted at /api/v1/ (atelier/urls.py). docs/api.md describes it.

Every operation needs authentication (api.auth.AUTH: API key, or the browser session with CSRF)
and counts against the caller's per-minute limit (api.auth.PlanRateThrottle). Errors have one
shape (api.errors). Routes live in api/routes/, one module per resource; each calls the same
service functions as the pages.
"""

from __future__ import annotations

from ninja import NinjaAPI, Swagger

from api import errors
from api.auth import AUTH, PlanRateThrottle
from api.routes import account, catalogue, conversations, documents, projects, sessions, streams

api = NinjaAPI(
    title="Atelier API",
    version="1",
    description="Multi-agent writing sessions: projects, sessions, runs, documents, usage. See docs/api.md.",
    auth=AUTH,
    throttle=[PlanRateThrottle()],
    docs=Swagger(settings={"persistAuthorization": False}),
    docs_url="/docs",
    openapi_url="/openapi.json",
    urls_namespace="api-v1",
)
errors.install(api)
api.add_router("/", account.router)
api.add_router("/projects", projects.router)
api.add_router("/sessions", sessions.router)
api.add_router("/sessions", documents.router)
api.add_router("/conversations", conversations.router)
api.add_router("/", catalogue.router)
api.add_router("/", streams.router)
