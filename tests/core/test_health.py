"""Health reporting: /healthz says whether a worker runs, and why not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from django.conf import settings

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


def test_healthz_answers_503_when_the_channel_layer_never_delivers(transactional_db, client, monkeypatch):
    from channels.layers import get_channel_layer

    from atelier.core import health

    async def never(channel):  # the message was accepted but never comes back (a wedged layer)
        await asyncio.sleep(3600)

    monkeypatch.setattr(health, "CHANNEL_LAYER_TIMEOUT", 0.5)
    monkeypatch.setattr(get_channel_layer(), "receive", never)

    status, body = _health(client)

    assert status == 503
    assert body["checks"]["channel_layer"] == {"ok": False, "error": "TimeoutError"}
    assert body["checks"]["database"] == {"ok": True}


def test_healthz_only_answers_get(client, db):
    assert client.post("/healthz").status_code == 405
