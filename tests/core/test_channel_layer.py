"""The channel layer under a burst: every live page of a busy process joins its session's group.

redis-py 8 caps a connection pool at 100 connections and raises MaxConnectionsError beyond them instead of
waiting; channels-redis takes a pool connection for every group_add and group_send. Two web processes with
200 pages opening at once answered some WebSocket connects with an HTTP 500 (bench/load.py, 2026-12-01).
"""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer


async def test_three_hundred_pages_joining_and_pushed_to_at_once_all_succeed():
    layer = get_channel_layer()
    channels = [await layer.new_channel() for _ in range(300)]
    groups = [f"burst-{index}" for index in range(300)]
    try:
        await asyncio.gather(*(layer.group_add(g, c) for g, c in zip(groups, channels, strict=True)))
        await asyncio.gather(*(layer.group_send(g, {"type": "session.ping", "n": i}) for i, g in enumerate(groups)))
        received = await asyncio.gather(*(layer.receive(c) for c in channels))
        assert [message["n"] for message in received] == list(range(300))
    finally:
        await asyncio.gather(*(layer.group_discard(g, c) for g, c in zip(groups, channels, strict=True)))
