"""One transaction id, one content: the id → content-fingerprint record in Redis.

Before a transaction reaches the feature state its id is *claimed*: ``SET <prefix>:id:{x:<id>}
"<content hash>|<topic>|<partition>|<offset>" NX GET PX <horizon>``, one command per transaction, one
pipelined round trip per micro-batch. The reply says which of three cases it is:

- ``new``: nobody used the id; the record now owns it (first content wins);
- ``repeat``: the same id with the same content (a redelivery, a producer retry): the feature functions
  return the first vector again without changing state (they remember the id per entity), and it is scored;
- ``conflict``: the same id with different content: dead-lettered (``duplicate:transaction_id:conflict``)
  with both fingerprints and where the first was read; it never reaches the feature state.

Why a record of its own and not a field in the entity state: the content of a conflicting record may name
another card or terminal, whose state knows nothing of the id; and on Redis Cluster the id record (hash tag
``{x:<id>}``) and an entity's state (``{c:<card>}``) live in different slots, so no one script can hold both.
The claim therefore precedes the feature update, and the pair is atomic in effect: a claim is only ever
followed by the update of its own content, and both are idempotent, so a crash between them is healed by the
redelivery (its claim says ``repeat``, and the update runs then).

Horizon: the record expires ``horizon_s`` of wall-clock time after the id was first claimed (Redis ``PX``),
never refreshed. After that the id is unknown again: a record with it is claimed anew; if its card and
terminal still remember the id (their own horizon: ``dedup_horizon_s`` of event time behind the entity's
watermark) they return the first vector and change nothing, otherwise it counts as a new transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from features.errors import FeatureScriptError, FeatureStoreUnavailable
from features.resp import RespChannel, ScriptReplyError

ClaimStatus = Literal["new", "repeat", "conflict"]


@dataclass(frozen=True, slots=True)
class Claim:
    """A transaction asking for its id: its content fingerprint and where it was read."""

    transaction_id: str
    content_hash: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class FirstClaim:
    """Who owns an id: the first record's fingerprint and position."""

    content_hash: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ClaimResult:
    status: ClaimStatus
    first: FirstClaim | None
    """The owner of the id (None when this record became the owner)."""


def _parse_owner(value: bytes) -> FirstClaim:
    content_hash, topic, partition, offset = value.decode().rsplit("|", 3)
    return FirstClaim(content_hash, topic, int(partition), int(offset))


class TransactionIds:
    """The id records of one key prefix (the feature store's base prefix: ``<prefix>:id:{x:<id>}``)."""

    def __init__(self, client: aioredis.Redis, *, key_prefix: str = "fs", horizon_s: float = 86_400.0) -> None:
        if "{" in key_prefix or "}" in key_prefix:
            msg = f"key_prefix {key_prefix!r} must not contain a hash tag"
            raise ValueError(msg)
        if horizon_s <= 0:
            msg = f"the transaction id horizon must be positive, got {horizon_s}"
            raise ValueError(msg)
        self.key_prefix = key_prefix
        self.horizon_ms = int(horizon_s * 1000)
        self._key_head = f"{key_prefix}:id:{{x:".encode()
        self._px = str(self.horizon_ms).encode()
        self._channel = RespChannel(client)

    def key(self, transaction_id: str) -> bytes:
        return self._key_head + transaction_id.encode() + b"}"

    def _payload(self, claims: Sequence[Claim]) -> bytes:
        head, px = self._key_head, self._px
        parts = []
        for c in claims:
            key = head + c.transaction_id.encode() + b"}"
            value = f"{c.content_hash}|{c.topic}|{c.partition}|{c.offset}".encode()
            parts.append(b"*7\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nNX\r\n$3\r\nGET\r\n$2\r\nPX\r\n$%d\r\n%s\r\n"
                         % (len(key), key, len(value), value, len(px), px))
        return b"".join(parts)

    async def claim(self, claims: Sequence[Claim]) -> list[ClaimResult]:
        """One result per claim, in order; claims of one call are applied in order (a repeat of an id
        earlier in the same call sees that earlier claim). Raises ``FeatureStoreUnavailable`` while Redis is
        away: call again, claiming is idempotent."""
        if not claims:
            return []
        try:
            replies = await self._channel.call_packed(self._payload(claims), len(claims))
        except ScriptReplyError as exc:
            if exc.transient:
                raise FeatureStoreUnavailable(str(exc)) from exc
            raise FeatureScriptError(str(exc)) from exc
        except (RedisError, OSError) as exc:
            msg = f"redis: {exc}"
            raise FeatureStoreUnavailable(msg) from exc
        out = []
        for c, reply in zip(claims, replies, strict=True):
            if not reply:  # nil: the key was not there, SET NX set it
                out.append(ClaimResult("new", None))
                continue
            assert isinstance(reply, bytes)
            owner = _parse_owner(reply)
            out.append(ClaimResult("repeat" if owner.content_hash == c.content_hash else "conflict", owner))
        return out

    async def purge(self) -> int:
        """Delete every id record under this prefix (SCAN + UNLINK; never FLUSHALL)."""
        return await self._channel.purge(f"{self.key_prefix}:id:*")
