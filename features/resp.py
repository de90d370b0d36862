"""Pipelined RESP batches over a connection borrowed from a redis-py pool.

Why: redis-py's pipeline packs and parses every command in Python, which capped a pipelined trivial
EVALSHA at about 45-70k calls/s here, while Redis itself serves about three times that. The store frames
a batch itself (one %-format per command) and sends it with the connection's public
``send_packed_command``; hiredis parses the replies. The connection (auth, TLS, database selection) comes
from redis-py. Reading the replies through redis-py's public ``read_response`` costs 2-3x the client CPU
(one coroutine chain per reply), so the default wire feeds the connection's stream to a
``hiredis.Reader`` in one loop (measured: docs/benchmarks.md, "RESP transports").
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from features.replication import ReplicaWait

# Error replies that describe the server's state, not the command: the same batch can succeed later
# (LOADING while Redis replays its AOF/RDB after a restart, BUSY while a script runs too long, a replica
# or cluster in transition, memory pressure, MISCONF while Redis cannot write its AOF or RDB — a full
# disk: Redis refuses every write until a write succeeds again, tests/chaos/test_full_disk.py).
TRANSIENT_PREFIXES = (
    b"LOADING", b"BUSY", b"TRYAGAIN", b"MASTERDOWN", b"READONLY", b"CLUSTERDOWN", b"OOM", b"MISCONF",
)


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

    def __init__(
        self, client: aioredis.Redis, *, wire: WireFactory | None = None, replicas: ReplicaWait | None = None
    ) -> None:
        self._client = client
        self._new_wire = wire or hiredis_wire
        self.replicas = replicas
        """With ``confirm``, calls end with the marker write and ``WAIT`` (features/replication.py)."""

    async def call_many(self, commands: Sequence[Sequence[bytes]], *, confirm: bool = False) -> list[bytes | int]:
        return await self.call_packed(pack_commands(commands), len(commands), confirm=confirm)

    async def call_packed(self, payload: bytes, count: int, *, confirm: bool = False) -> list[bytes | int]:
        """Send ``count`` already RESP-framed commands in one write and read their replies. With ``confirm``
        (and ``replicas``), the replicas confirm every write this Redis ran before the replies return (on
        one node, the marker covers the writes of any connection: its replication offset is the node's);
        ``count`` may then be 0."""
        wait = self.replicas if confirm else None
        if wait is not None:
            payload += pack_commands(wait.commands())
            count += 2
        if not count:
            return []
        pool = self._client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            wire = await open_wire(conn, self._new_wire)
            await wire.write(payload)
            replies, errors = await wire.read(count)
        except BaseException:
            # The stream may hold half a reply: never hand it back to the pool in that state.
            await conn.disconnect(nowait=True)
            await pool.release(conn)
            raise
        await pool.release(conn)
        _raise_errors(errors, count)
        if wait is not None:
            wait.check(replies[-1], "redis")
            del replies[-2:]
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

    def __init__(self, client: aioredis.Redis, *, wire: WireFactory | None = None) -> None:
        self._client = client
        self._new_wire = wire or hiredis_wire
        self._conn: Any = None
        self._wire: Wire | None = None
        self._unread: deque[SentBatch] = deque()
        self._lock = asyncio.Lock()  # FIFO: a send waiting for a connection keeps its place

    async def send(self, payload: bytes, count: int) -> SentBatch:
        """Queue a batch behind every earlier one. A connection error is not raised here: the batch stays
        queued and is sent again when ``receive`` reconnects."""
        batch = SentBatch(payload, count)
        async with self._lock:
            self._unread.append(batch)
            try:
                if self._wire is None:
                    await self._connect()  # sends everything unread, this batch included
                else:
                    await self._wire.write(payload)
            except (OSError, ConnectionError, RedisConnectionError, RedisTimeoutError):
                # (redis-py's send_packed_command applies the client's socket timeout to the write)
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
                    if self._wire is None:
                        await self._connect()
                assert self._wire is not None
                # the wire keeps the bytes read past these replies (the next batch's) for the next read
                replies, errors = await self._wire.read(head.count)
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
        wire = await open_wire(conn, self._new_wire)
        await wire.write(b"".join(b.payload for b in self._unread))
        self._wire = wire

    async def _drop(self) -> None:
        conn, self._conn, self._wire = self._conn, None, None
        if conn is not None:
            await conn.disconnect(nowait=True)
            await self._client.connection_pool.release(conn)

    async def close(self) -> None:
        await self._drop()


class Wire(Protocol):
    """One connected redis-py connection, as a batch transport."""

    async def write(self, payload: bytes) -> None: ...

    async def read(self, count: int) -> tuple[list[bytes | int], list[bytes]]:
        """``count`` replies (an error reply's place holds ``b""``) and the error replies' texts."""
        ...


WireFactory = Callable[[Any], Wire]
"""Makes the ``Wire`` of a connected redis-py connection: ``hiredis_wire`` (the default) or ``public_wire``
(public redis-py APIs only; 2-3x the client CPU). ``python -m fraudstream.bench.features --transport-rounds`` measures
them, and the hand-written parser this module had before, against each other in one run."""


async def open_wire(conn: Any, new_wire: WireFactory) -> Wire:
    await conn.connect()
    return new_wire(conn)


def hiredis_wire(conn: Any) -> Wire:
    return _HiredisWire(conn, connection_stream(conn))


def public_wire(conn: Any) -> Wire:
    return _PublicWire(conn)


def connection_stream(conn: Any) -> asyncio.StreamReader:
    """The connected redis-py connection's byte stream (a private attribute, see ``_HiredisWire``)."""
    stream = getattr(conn, "_reader", None)
    if not isinstance(stream, asyncio.StreamReader):
        msg = f"redis-py's {type(conn).__name__} keeps no asyncio.StreamReader in `_reader`: features/resp.py needs it"
        raise TypeError(msg)
    return stream


async def _send(conn: Any, payload: bytes) -> None:
    # No health check: it would send a PING between batches whose replies are not read yet.
    await conn.send_packed_command(payload, check_health=False)


class _HiredisWire:
    """Replies parsed by a ``hiredis.Reader`` fed from the connection's stream.

    The stream (``conn._reader``, an ``asyncio.StreamReader``) is the one private attribute used: redis-py
    has no public call that reads more than one reply per coroutine, and that per-reply cost is what this
    avoids (``connection_stream`` and ``tests/features/test_resp_guard.py`` fail plainly if redis-py renames
    it)."""

    def __init__(self, conn: Any, stream: asyncio.StreamReader) -> None:
        self._conn = conn
        self._stream = stream
        self._reader = hiredis.Reader()  # bytes out; an error reply comes back as a hiredis.ReplyError
        # the client's socket_timeout (config/redis.py: 5 s): the longest a batch waits for Redis's next bytes
        timeout = getattr(conn, "socket_timeout", None)
        self._timeout_s: float | None = float(timeout) if timeout else None

    async def write(self, payload: bytes) -> None:
        await _send(self._conn, payload)

    async def read(self, count: int) -> tuple[list[bytes | int], list[bytes]]:
        replies: list[bytes | int] = []
        errors: list[bytes] = []
        gets = self._reader.gets
        while len(replies) < count:
            reply = gets()
            if reply.__class__ is bytes or reply.__class__ is int:  # nearly every reply (not False: a bool)
                replies.append(reply)
            elif reply is False:  # nothing complete in the buffer
                # redis-py's socket timeout does not apply to a stream read here: bound the wait for the next
                # bytes ourselves, or a black-holed connection (no FIN, no RST) stalls the worker silently for
                # as long as it lasts (found with a Toxiproxy ``timeout`` toxic, tests/chaos/test_network_faults.py).
                # It bounds the wait for the next bytes, not a whole batch: a slow link is never cut off.
                try:
                    async with asyncio.timeout(self._timeout_s):
                        chunk = await self._stream.read(1 << 20)
                except TimeoutError:
                    msg = f"no reply from redis for {self._timeout_s:g}s ({len(replies)} of {count} replies read)"
                    raise TimeoutError(msg) from None
                if not chunk:
                    msg = "redis closed the connection mid-batch"
                    raise ConnectionError(msg)
                self._reader.feed(chunk)
            elif reply is None:  # a Lua nil/false (RESP2 nil bulk, RESP3 null)
                replies.append(b"")
            elif isinstance(reply, hiredis.ReplyError):
                errors.append(str(reply).encode(errors="replace"))
                replies.append(b"")
            else:
                msg = f"unexpected RESP reply {type(reply).__name__} (only flat replies are expected)"
                raise ConnectionError(msg)
        return replies, errors


class _PublicWire:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def write(self, payload: bytes) -> None:
        await _send(self._conn, payload)

    async def read(self, count: int) -> tuple[list[bytes | int], list[bytes]]:
        """An error reply is kept in place (as redis-py's own pipeline does) so the replies after it stay
        aligned with their commands."""
        replies: list[bytes | int] = []
        errors: list[bytes] = []
        read = self._conn.read_response
        for _ in range(count):
            try:
                reply = await read(disable_decoding=True)
            except ResponseError as exc:
                errors.append(_error_text(exc))
                replies.append(b"")
                continue
            replies.append(b"" if reply is None else reply)
        return replies, errors


def _error_text(exc: ResponseError) -> bytes:
    """The error reply as Redis sent it: redis-py moves a known prefix (``NOSCRIPT``, ``LOADING``, ``ERR``)
    into ``status_code``, and ``classify`` reads the prefix."""
    text = str(exc)
    code = exc.status_code
    if code and not text.startswith(code):
        text = f"{code} {text}"
    return text.encode(errors="replace")
