"""``WAIT``: a batch's state writes confirmed by the primaries' replicas before the batch may be acked.

Redis replicates asynchronously: a primary acknowledges a write before its replicas have it, and a
primary that dies in between takes the write with it while the promoted replica goes on without it. With
``ReplicaWait`` the channels (``features/resp.py``, ``features/cluster.py``) end every confirmed round
trip with two more commands on the same connection, after the calls:

    SET <prefix>:durable:{<tag>} 1      # a write that always propagates (see below)
    WAIT <replicas> <timeout_ms>

and fail the round with ``ReplicasBehind`` (retryable) when fewer replicas than asked confirmed.

Why the marker ``SET``: ``WAIT`` waits for the replication offset of the *connection's own last write*.
A call that changed nothing (a redelivered transaction, an id already claimed) propagates nothing, so a
``WAIT`` after it alone would wait for an older offset — or none — and pass although an earlier write of
the same batch (sent on a connection that was lost, or before a shortfall) is not on a replica yet. The
marker always propagates, after everything the node ran before it, so a passing ``WAIT`` confirms all of
it. On a cluster the marker's key is in a slot the node owns (its hash tag is chosen per slot), one key
per node, overwritten each time.

Why at the end of each round trip and not once per batch on fresh connections: on a cluster a failover
between the writes and a later barrier would send that barrier to the promoted replica, which may lack
the writes, and it would pass. Ended by its own ``WAIT``, a round trip whose primary dies is sent again
whole to the promoted replica (``features/cluster.py``), where the writes are made again if they were lost
(every function is idempotent per transaction id) and confirmed there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from redis.crc import key_slot

from features.errors import FeatureStoreUnavailable


class ReplicasBehind(FeatureStoreUnavailable):
    """Fewer replicas than asked confirmed a round trip's writes within the timeout (a replica down or
    lagging, a shard that just failed over and has no replica yet). Retryable: the batch is not acked, and
    its calls are sent again and confirmed again (idempotent per transaction id)."""


@cache
def slot_tag(slot: int) -> bytes:
    """A short hash tag whose key slot is ``slot`` (found by counting; about 16,000 tries on average)."""
    if not 0 <= slot < 16384:
        msg = f"no cluster slot {slot}"
        raise ValueError(msg)
    i = 0
    while key_slot(b"%x" % i) != slot:
        i += 1
    return b"%x" % i


@dataclass(frozen=True, slots=True)
class ReplicaWait:
    """Ask ``replicas`` replicas to confirm each round trip's writes within ``timeout_ms``.

    ``marker_prefix`` is the key prefix of the marker (the store's own prefix: an ACL that limits the
    worker to its prefix allows it)."""

    replicas: int
    timeout_ms: int
    marker_prefix: str = "fs"

    def __post_init__(self) -> None:
        if self.replicas < 1:
            msg = f"replicas to wait for must be >= 1, got {self.replicas} (no ReplicaWait means no WAIT)"
            raise ValueError(msg)
        if self.timeout_ms < 1:
            # WAIT n 0 blocks until n replicas answer: a dead replica would hang the worker
            msg = f"the WAIT timeout must be >= 1 ms, got {self.timeout_ms}"
            raise ValueError(msg)

    def commands(self, slot: int | None = None) -> list[list[bytes]]:
        """The marker write and the ``WAIT``; ``slot``: the cluster slot the marker's key must be in."""
        key = f"{self.marker_prefix}:durable".encode()
        if slot is not None:
            key += b":{" + slot_tag(slot) + b"}"
        return [[b"SET", key, b"1"], [b"WAIT", str(self.replicas).encode(), str(self.timeout_ms).encode()]]

    def check(self, confirmed: object, where: str) -> None:
        """Raise ``ReplicasBehind`` unless ``confirmed`` (WAIT's reply) reaches ``replicas``."""
        if not isinstance(confirmed, int) or confirmed < self.replicas:
            msg = (f"{where}: {confirmed!r} of {self.replicas} replicas confirmed the writes within "
                   f"{self.timeout_ms} ms (WAIT); the batch is not acked and is sent again")
            raise ReplicasBehind(msg)
