"""A batch waits at most the client's socket timeout for Redis's next bytes (features/resp.py).

Redis is made to hold its replies with ``CLIENT PAUSE … WRITE`` (a real redis-server, no mock): the batch is
sent, no byte comes back. Before the fix the channels read the stream without any timeout, so a
black-holed connection stalled the worker silently (tests/chaos/test_network_faults.py found it)."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from features.resp import OrderedLane, RespChannel, pack_commands

TIMEOUT_S = 0.3
PAUSE_MS = 1500


def _rpush(key: str) -> tuple[bytes, int]:
    return pack_commands([[b"RPUSH", key.encode(), b"x"]]), 1


async def test_ordered_lane_gives_up_after_the_socket_timeout_then_replays(
    redis_url: str, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S)
    lane = OrderedLane(client)
    key = f"{key_prefix}:paused"
    try:
        await redis_client.client_pause(PAUSE_MS, all=False)  # WRITE: connecting still works
        batch = await lane.send(*_rpush(key))
        began = time.monotonic()
        with pytest.raises(TimeoutError, match=f"no reply from redis for {TIMEOUT_S:g}s"):
            await lane.receive(batch)
        waited = time.monotonic() - began
        assert TIMEOUT_S * 0.9 <= waited < PAUSE_MS / 1000, waited
        await redis_client.client_unpause()
        # the batch is still the lane's head: received again, it is sent again on a new connection
        assert await lane.receive(batch) in ([1], [2])  # [2]: the first send ran once Redis resumed
    finally:
        await redis_client.client_unpause()
        await lane.close()
        await redis_client.delete(key)
        await client.aclose()


async def test_resp_channel_gives_up_after_the_socket_timeout(
    redis_url: str, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    client = aioredis.Redis.from_url(redis_url, socket_timeout=TIMEOUT_S)
    channel = RespChannel(client)
    try:
        await redis_client.client_pause(PAUSE_MS, all=False)  # WRITE: connecting still works
        with pytest.raises(TimeoutError, match="no reply from redis"):
            await channel.call_packed(*_rpush(f"{key_prefix}:paused"))
    finally:
        await redis_client.client_unpause()
        await redis_client.delete(f"{key_prefix}:paused")
        await client.aclose()
