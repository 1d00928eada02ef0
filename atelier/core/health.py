"""Health checks for /healthz and `manage.py healthcheck`."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from asgiref.sync import async_to_sync
from django.db import connection


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return {"ok": False, "error": type(exc).__name__}


# How long the channel layer's send-and-receive may take before /healthz calls it down (seconds): a layer
# that accepts the message but never delivers it must not hang the health check (and its caller) forever.
CHANNEL_LAYER_TIMEOUT = 3.0


def check_channel_layer() -> dict[str, Any]:
    """Send a message to a new channel and receive it back: {"ok": True}, or {"ok": False, "error": the
    exception's name} ("TimeoutError" when it did not come back within CHANNEL_LAYER_TIMEOUT seconds)."""
    from channels.layers import get_channel_layer

    try:
        layer = get_channel_layer()

        async def roundtrip() -> bool:
            channel = await layer.new_channel()
            token = uuid.uuid4().hex
            await layer.send(channel, {"type": "health.ping", "token": token})
            message = await layer.receive(channel)
            return bool(message.get("token") == token)

        async def bounded() -> bool:
            return await asyncio.wait_for(roundtrip(), timeout=CHANNEL_LAYER_TIMEOUT)

        return {"ok": bool(async_to_sync(bounded)())}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": type(exc).__name__}


def check_worker() -> dict[str, Any]:
    """A django-q2 cluster reports its status to the broker every few seconds with a short expiry."""
    try:
        from django_q.status import Stat

        clusters = [stat for stat in Stat.get_all() if stat.status not in ("Stopped",)]
        if not clusters:
            return {"ok": False, "error": "no worker cluster is running"}
        newest = max(stat.timestamp for stat in clusters)
        return {"ok": True, "clusters": len(clusters), "last_seen_seconds": round(time.time() - newest.timestamp(), 1)}
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "error": type(exc).__name__}


def check_all() -> dict[str, Any]:
    return {"database": check_database(), "channel_layer": check_channel_layer(), "worker": check_worker()}
