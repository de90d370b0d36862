"""One transaction id, one content, one outcome: the id record in Redis.

Before a transaction reaches the feature state its id is *claimed*: one ``FCALL`` per transaction on the hash
``<prefix>:id:{x:<id>}``, one pipelined round trip per micro-batch. The hash holds ``c`` = ``"<content
hash>|<topic>|<partition>|<offset>"`` of the first record with the id, and, once that record's scored result
was published, ``o`` = the result (score, decision, reason codes, model; ``record_outcomes``). The claim's
reply says which case it is:

- ``new``: nobody used the id; the record now owns it (first content wins);
- ``repeat``: the same id with the same content (a redelivery, a producer retry). If the first result is
  stored, the repeat gets it again, byte for byte, and touches nothing else; if not (the first is still in
  flight, or its worker died before publishing), the feature functions return the first vector without
  changing state, and it is scored;
- ``conflict``: the same id with different content: dead-lettered (``duplicate:transaction_id:conflict``)
  with both fingerprints and where the first was read; it never reaches the feature state.

Why a record of its own and not a field in the entity state: the content of a conflicting record may name
another card or terminal, whose state knows nothing of the id; and on Redis Cluster the id record (hash tag
``{x:<id>}``) and an entity's state (``{c:<card>}``) live in different slots, so no one script can hold both.
The claim therefore precedes the feature update, and the pair is atomic in effect: a claim is only ever
followed by the update of its own content, and both are idempotent, so a crash between them is healed by the
redelivery (its claim says ``repeat``, and the update runs then).

Horizon: the record expires ``horizon_s`` of wall-clock time after the id was first claimed (Redis
``PEXPIRE``), never refreshed. After that the id is unknown again: a record with it is claimed anew; if its
card and terminal still remember the id (their own horizon: ``dedup_horizon_s`` of event time behind the
entity's watermark) they return the first vector and change nothing, otherwise it counts as a new
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from features.calls import call_functions
from features.cluster import ClusterChannel
from features.replication import ReplicaWait
from features.resp import RespChannel, pack_commands

ClaimStatus = Literal["new", "repeat", "conflict"]

# claim: KEYS[1] the id record, ARGV[1] "<content hash>|<topic>|<partition>|<offset>", ARGV[2] horizon in ms.
# Replies nil (new), or the owner's claim, followed by "\n" and the stored result when there is one.
# outcome: KEYS[1], ARGV[1] the result; kept only by a live record (an expired one is not brought back
# without a TTL), and only the first (HSETNX).
_LIBRARY = """#!lua name=fraudstream_ids_v1
redis.register_function('fraudstream_ids_claim', function(KEYS, ARGV)
  local c = redis.call('HGET', KEYS[1], 'c')
  if not c then
    redis.call('HSET', KEYS[1], 'c', ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return false
  end
  local o = redis.call('HGET', KEYS[1], 'o')
  if o then return c .. '\\n' .. o end
  return c
end)
redis.register_function('fraudstream_ids_outcome', function(KEYS, ARGV)
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSETNX', KEYS[1], 'o', ARGV[1]) end
  return 1
end)
"""


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
    outcome: bytes | None = None
    """For a repeat: the first record's published result, when it is stored."""


def _parse_owner(value: bytes) -> tuple[FirstClaim, bytes | None]:
    claim, newline, outcome = value.partition(b"\n")
    content_hash, topic, partition, offset = claim.decode().rsplit("|", 3)
    return FirstClaim(content_hash, topic, int(partition), int(offset)), (outcome if newline else None)


class TransactionIds:
    """The id records of one key prefix (the feature store's base prefix: ``<prefix>:id:{x:<id>}``)."""

    def __init__(
        self, client: aioredis.Redis | RedisCluster, *, key_prefix: str = "fs", horizon_s: float = 86_400.0,
        wait_replicas: int = 0, wait_timeout_ms: int = 1000,
    ) -> None:
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
        # on a cluster, each claim goes to its id's slot owner (features/cluster.py)
        # With wait_replicas, stored results are confirmed by replicas before they count
        # (features/replication.py); claims are not: a lost claim is made again by the redelivery, and the
        # marker written with a later result on the same node covers the claim too.
        replicas = ReplicaWait(wait_replicas, wait_timeout_ms, key_prefix) if wait_replicas else None
        self._channel: ClusterChannel | RespChannel = (
            ClusterChannel(client, replicas=replicas) if isinstance(client, RedisCluster)
            else RespChannel(client, replicas=replicas))

    def key(self, transaction_id: str) -> bytes:
        return self._key_head + transaction_id.encode() + b"}"

    async def load_scripts(self) -> None:
        """FUNCTION LOAD the id functions (again when Redis lost them)."""
        await self._call(pack_commands([[b"FUNCTION", b"LOAD", b"REPLACE", _LIBRARY.encode()]]), 1, reload=False)

    async def _call(
        self, payload: bytes, count: int, *, reload: bool = True, confirm: bool = False
    ) -> list[bytes | int]:
        # safe to replay after a reload: claims and outcomes are idempotent
        return await call_functions(partial(self._channel.call_packed, payload, count, confirm=confirm),
                                    reload=self.load_scripts if reload else None)

    def _claims_payload(self, claims: Sequence[Claim]) -> bytes:
        head, px = self._key_head, self._px
        parts = []
        for c in claims:
            key = head + c.transaction_id.encode() + b"}"
            value = f"{c.content_hash}|{c.topic}|{c.partition}|{c.offset}".encode()
            parts.append(b"*6\r\n$5\r\nFCALL\r\n$21\r\nfraudstream_ids_claim\r\n$1\r\n1\r\n$%d\r\n%s\r\n"
                         b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(key), key, len(value), value, len(px), px))
        return b"".join(parts)

    async def claim(self, claims: Sequence[Claim]) -> list[ClaimResult]:
        """One result per claim, in order; claims of one call are applied in order (a repeat of an id
        earlier in the same call sees that earlier claim). Raises ``FeatureStoreUnavailable`` while Redis is
        away: call again, claiming is idempotent."""
        if not claims:
            return []
        replies = await self._call(self._claims_payload(claims), len(claims))
        out = []
        for c, reply in zip(claims, replies, strict=True):
            if not reply:  # nil: the id was free, this record owns it now
                out.append(ClaimResult("new", None))
                continue
            assert isinstance(reply, bytes)
            owner, outcome = _parse_owner(reply)
            if owner.content_hash != c.content_hash:
                out.append(ClaimResult("conflict", owner))
            else:
                out.append(ClaimResult("repeat", owner, outcome))
        return out

    async def record_outcomes(self, outcomes: Sequence[tuple[str, bytes]]) -> None:
        """Store each (transaction id, published result) unless the id already has one: later repeats get
        it instead of a new score. Idempotent; call only after the result was published."""
        if not outcomes:
            return
        head = self._key_head
        parts = []
        for transaction_id, outcome in outcomes:
            key = head + transaction_id.encode() + b"}"
            parts.append(b"*5\r\n$5\r\nFCALL\r\n$23\r\nfraudstream_ids_outcome\r\n$1\r\n1\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
                         % (len(key), key, len(outcome), outcome))
        await self._call(b"".join(parts), len(outcomes), confirm=True)

    async def purge(self) -> int:
        """Delete every id record under this prefix (SCAN + UNLINK; never FLUSHALL)."""
        return await self._channel.purge(f"{self.key_prefix}:id:*")
