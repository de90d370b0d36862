"""``features.resp``'s wires against a real redis-server: the same replies from each, and a plain failure
if redis-py stops exposing the one private attribute the default wire reads (the connection's
``asyncio.StreamReader``)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from features.resp import (
    OrderedLane,
    RespChannel,
    ScriptReplyError,
    WireFactory,
    hiredis_wire,
    pack_commands,
    public_wire,
)


async def test_the_default_wire_finds_the_connection_stream(redis_client: aioredis.Redis) -> None:
    assert RespChannel(redis_client)._new_wire is hiredis_wire
    conn = await redis_client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.connect()
        assert isinstance(getattr(conn, "_reader", None), asyncio.StreamReader), (
            "redis-py no longer keeps the connection's asyncio.StreamReader in `_reader`: features/resp.py's "
            "hiredis_wire reads it; make public_wire the default (public APIs, 2-3x the client CPU) or adapt"
        )
    finally:
        await redis_client.connection_pool.release(conn)


@pytest.mark.parametrize("wire", [hiredis_wire, public_wire], ids=["hiredis", "redis-py"])
async def test_every_wire_reads_the_same_flat_replies(
    redis_client: aioredis.Redis, key_prefix: str, wire: WireFactory
) -> None:
    key = f"{key_prefix}:{wire.__name__}"
    commands = [
        [b"SET", key.encode(), b"v\r\n\x00"],  # a simple string, then a bulk string holding CRLF and NUL
        [b"GET", key.encode()],
        [b"STRLEN", key.encode()],
        [b"GET", f"{key}:missing".encode()],  # nil
        [b"EVAL", b"return false", b"0"],  # a Lua false: nil in RESP2, null in RESP3
        [b"EVAL", b"return 'x' .. string.rep('y', 200000)", b"0"],  # larger than one socket read
    ]
    channel = RespChannel(redis_client, wire=wire)
    replies = await channel.call_many(commands)
    assert replies == [b"OK", b"v\r\n\x00", 4, b"", b"", b"x" + b"y" * 200_000]

    lane = OrderedLane(redis_client, wire=wire)
    bad = await lane.send(pack_commands([[b"FCALL", b"no_such_function", b"0"], [b"STRLEN", key.encode()]]), 2)
    good = await lane.send(pack_commands([[b"GET", key.encode()]]), 1)
    assert await lane.receive(good) == [b"v\r\n\x00"]
    with pytest.raises(ScriptReplyError, match="1 of 2 commands failed, first: ERR Function not found") as raised:
        await lane.receive(bad)
    assert raised.value.noscript
    await lane.close()
    await redis_client.delete(key)
