"""A minimal RESP2 pipeline over a connection borrowed from a redis-py pool.

Why: redis-py's pipeline packs and parses every command in pure Python (hiredis is not a dependency),
which capped a pipelined trivial EVALSHA at about 45-70k calls/s here, while Redis itself serves about
three times that. Framing the batch ourselves and parsing the replies in one pass over the buffer keeps
the client out of the way. The connection (auth, TLS, database selection) still comes from redis-py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

# Error replies that describe the server's state, not the command: the same batch can succeed later
# (LOADING while Redis replays its AOF/RDB after a restart, BUSY while a script runs too long, a replica
# or cluster in transition, memory pressure).
TRANSIENT_PREFIXES = (b"LOADING", b"BUSY", b"TRYAGAIN", b"MASTERDOWN", b"READONLY", b"CLUSTERDOWN", b"OOM")


class ScriptReplyError(Exception):
    """Redis answered one or more commands of a batch with an error reply."""

    def __init__(self, message: str, *, noscript: bool, transient: bool = False) -> None:
        super().__init__(message)
        self.noscript = noscript
        self.transient = transient


def classify(errors: Sequence[bytes]) -> tuple[bool, bool]:
    """(functions missing, server transiently unable) for a batch's error replies."""
    noscript = any(e.startswith(b"NOSCRIPT") or b"Function not found" in e for e in errors)
    transient = any(e.startswith(TRANSIENT_PREFIXES) for e in errors)
    return noscript, transient


def pack_commands(commands: Sequence[Sequence[bytes]]) -> bytes:
    parts: list[bytes] = []
    for args in commands:
        parts.append(b"*%d\r\n" % len(args))
        for a in args:
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


class RespChannel:
    """Sends many commands in one write and reads all their replies (bulk strings, integers, errors)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._timeout_s = reply_timeout(client)

    async def call_many(self, commands: Sequence[Sequence[bytes]]) -> list[bytes | int]:
        return await self.call_packed(pack_commands(commands), len(commands))

    async def call_packed(self, payload: bytes, count: int) -> list[bytes | int]:
        """Send ``count`` already RESP-framed commands in one write and read their replies."""
        if not count:
            return []
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.connect()
            reader, writer = conn._reader, conn._writer
            if reader is None or writer is None:
                msg = "redis connection has no stream"
                raise ConnectionError(msg)
            writer.write(payload)
            await writer.drain()
            replies, errors, _ = await _read_replies(reader, count, b"", self._timeout_s)
        except BaseException:
            # The stream may hold half a reply: never hand it back to the pool in that state.
            await conn.disconnect(nowait=True)
            await pool.release(conn)
            raise
        await pool.release(conn)
        _raise_errors(errors, count)
        return replies

    async def purge(self, pattern: str) -> int:
        deleted = 0
        batch: list[bytes] = []
        async for key in self._client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(await self._client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(await self._client.unlink(*batch))
        return deleted

    async def close(self) -> None:
        """Nothing to release: the redis client belongs to the caller."""


def _raise_errors(errors: list[bytes], count: int) -> None:
    if errors:
        noscript, transient = classify(errors)
        first = errors[0].decode(errors="replace")
        msg = f"{len(errors)} of {count} commands failed, first: {first}"
        raise ScriptReplyError(msg, noscript=noscript, transient=transient)


@dataclass(eq=False, slots=True)
class SentBatch:
    """A batch handed to an ``OrderedLane``; its replies are read with ``OrderedLane.receive``."""

    payload: bytes
    count: int
    replies: tuple[list[bytes | int], list[bytes]] | None = None
    """Replies and error replies, once read off the connection."""


class OrderedLane:
    """Batches sent on one connection, executed in the order they were sent; replies read in that order.

    Redis runs one connection's commands in the order they arrive, so a batch sent behind another is
    applied after it. The worker sends a micro-batch before it has read the previous one's replies: Redis
    then works on the next batch while the worker turns the last one's replies into features. (On two
    pooled connections the order would not hold: Redis reads each client's pipeline in slices and
    interleaves them.)

    When the connection breaks, every batch whose replies were not read yet is sent again, in order, on
    the next connection, before anything new: nothing sent is lost and the order holds. A batch may then
    run twice; the feature functions are idempotent per transaction id.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._timeout_s = reply_timeout(client)
        self._conn: Any = None
        self._buffer = b""
        self._unread: deque[SentBatch] = deque()
        self._lock = asyncio.Lock()  # FIFO: a send waiting for a connection keeps its place

    async def send(self, payload: bytes, count: int) -> SentBatch:
        """Queue a batch behind every earlier one. A connection error is not raised here: the batch stays
        queued and is sent again when ``receive`` reconnects."""
        batch = SentBatch(payload, count)
        async with self._lock:
            self._unread.append(batch)
            try:
                if self._conn is None:
                    await self._connect()  # sends everything unread, this batch included
                else:
                    self._conn._writer.write(payload)
                    await self._conn._writer.drain()
            except (OSError, ConnectionError, RedisConnectionError):
                await self._drop()
        return batch

    async def receive(self, batch: SentBatch) -> list[bytes | int]:
        """The replies of ``batch``. The replies of batches sent before it come first on the connection:
        they are read and kept for their own ``receive`` (a batch sent again after an error reply is
        behind batches that were sent after it the first time)."""
        while batch.replies is None:
            if not self._unread:
                msg = "this batch was not sent on this lane"
                raise RuntimeError(msg)
            head = self._unread[0]
            try:
                async with self._lock:
                    if self._conn is None:
                        await self._connect()
                replies, errors, self._buffer = await _read_replies(
                    self._conn._reader, head.count, self._buffer, self._timeout_s
                )
            except BaseException:
                await self._drop()  # half-read replies: the next connection starts again from ``head``
                raise
            head.replies = (replies, errors)
            self._unread.popleft()
        replies, errors = batch.replies
        _raise_errors(errors, batch.count)
        return replies

    async def _connect(self) -> None:
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        self._conn = conn
        await conn.connect()
        if conn._reader is None or conn._writer is None:
            msg = "redis connection has no stream"
            raise ConnectionError(msg)
        conn._writer.write(b"".join(b.payload for b in self._unread))
        await conn._writer.drain()

    async def _drop(self) -> None:
        conn, self._conn, self._buffer = self._conn, None, b""
        if conn is not None:
            await conn.disconnect(nowait=True)
            await self._client.connection_pool.release(conn)

    async def close(self) -> None:
        await self._drop()


def reply_timeout(client: aioredis.Redis) -> float | None:
    """The client's ``socket_timeout`` (config/redis.py: 5 s): the longest a batch waits for Redis's next bytes.

    These channels read the connection's stream themselves, where redis-py's own timeout does not apply.
    Without it a black-holed connection (bytes dropped, no FIN, no RST: a dead link, a proxy or firewall
    that lost the connection) stalled the worker silently for as long as it lasted, with no log line and no
    reconnect (found with a Toxiproxy ``timeout`` toxic, tests/chaos/test_network_faults.py). It bounds the
    wait for the next bytes, not a whole batch: a slow link that keeps delivering is never cut off."""
    timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    return float(timeout) if timeout else None


async def _read_replies(
    reader: asyncio.StreamReader, count: int, buf: bytes, timeout_s: float | None = None
) -> tuple[list[bytes | int], list[bytes], bytes]:
    """``count`` replies from ``buf`` and then the stream; also returns the bytes read past them (the next
    batch's replies, on an ``OrderedLane``)."""
    replies: list[bytes | int] = []
    errors: list[bytes] = []
    pos = 0
    size = len(buf)
    while True:
        while len(replies) < count:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            kind = buf[pos]
            if kind == 36:  # '$' bulk string
                length = int(buf[pos + 1 : eol])
                if length < 0:
                    replies.append(b"")
                    pos = eol + 2
                    continue
                end = eol + 2 + length
                if end + 2 > size:
                    break
                replies.append(buf[eol + 2 : end])
                pos = end + 2
            elif kind == 58:  # ':' integer
                replies.append(int(buf[pos + 1 : eol]))
                pos = eol + 2
            elif kind == 45:  # '-' error
                errors.append(buf[pos + 1 : eol])
                replies.append(b"")
                pos = eol + 2
            elif kind == 95:  # '_' null: redis-py 8 speaks RESP3 by default, where a Lua nil/false is this
                replies.append(b"")
                pos = eol + 2
            elif kind == 43:  # '+' simple string
                replies.append(buf[pos + 1 : eol])
                pos = eol + 2
            else:
                msg = f"unexpected RESP reply type {chr(kind)!r} (only flat replies are expected)"
                raise ConnectionError(msg)
        if len(replies) >= count:
            return replies, errors, buf[pos:]
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await reader.read(1 << 20)
        except TimeoutError:
            msg = f"no reply from redis for {timeout_s:g}s ({len(replies)} of {count} replies read)"
            raise TimeoutError(msg) from None
        if not chunk:
            msg = "redis closed the connection mid-batch"
            raise ConnectionError(msg)
        buf = buf[pos:] + chunk
        pos = 0
        size = len(buf)
