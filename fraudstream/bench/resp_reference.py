"""The reply parser ``features/resp.py`` had before hiredis parsed the replies: written to and parsed from
redis-py's private streams in pure Python. Kept as ``fraudstream.bench.features --transport-rounds``'s reference."""

from __future__ import annotations

import asyncio
from typing import Any

from features.resp import Wire, connection_stream


def handwritten_wire(conn: Any) -> Wire:
    return HandwrittenWire(conn, connection_stream(conn))


class HandwrittenWire:
    """The code this module had before hiredis: it writes to and parses from the private streams."""

    def __init__(self, conn: Any, stream: asyncio.StreamReader) -> None:
        self._writer = conn._writer
        self._stream = stream
        self._buffer = b""

    async def write(self, payload: bytes) -> None:
        self._writer.write(payload)
        await self._writer.drain()

    async def read(self, count: int) -> tuple[list[bytes | int], list[bytes]]:
        replies, errors, self._buffer = await _read_replies(self._stream, count, self._buffer)
        return replies, errors


async def _read_replies(
    reader: asyncio.StreamReader, count: int, buf: bytes
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
        chunk = await reader.read(1 << 20)
        if not chunk:
            msg = "redis closed the connection mid-batch"
            raise ConnectionError(msg)
        buf = buf[pos:] + chunk
        pos = 0
        size = len(buf)
