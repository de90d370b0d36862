"""Kafka's default partitioner (murmur2 of the key), vectorised over a micro-batch.

aiokafka's ``DefaultPartitioner`` hashes one key at a time in pure Python (~4 µs a record here). Keys of
one batch mostly share a length (card references are 32 hex characters), so they are hashed as the
rows of a matrix with wrapping uint32 arithmetic; the result equals the Java client's partition, so
a card's records land where any other Kafka producer would put them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

_SEED = np.uint32(0x9747B28C)
_M = np.uint32(0x5BD1E995)
U32 = npt.NDArray[np.uint32]


def murmur2(keys: Sequence[bytes]) -> U32:
    """Kafka's murmur2 of each key (unsigned)."""
    out = np.empty(len(keys), dtype=np.uint32)
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        by_length[len(key)].append(i)
    for length, rows in by_length.items():
        out[rows] = _murmur2_same_length([keys[i] for i in rows], length)
    return out


def _murmur2_same_length(keys: list[bytes], length: int) -> U32:
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    h = np.full(len(keys), _SEED ^ np.uint32(length), dtype=np.uint32)
    whole = length // 4 * 4
    blocks = np.ascontiguousarray(data[:, :whole]).view("<u4")
    for j in range(blocks.shape[1]):
        k = blocks[:, j] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        h *= _M
        h ^= k
    tail = data[:, whole:].astype(np.uint32)
    if tail.shape[1]:
        for j in reversed(range(tail.shape[1])):
            h ^= tail[:, j] << np.uint32(8 * j)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def partitions_for(keys: Sequence[bytes], partitions: Sequence[int]) -> list[int]:
    """The partition of each key among ``partitions`` (sorted ids), as Kafka's default partitioner picks."""
    index = (murmur2(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(len(partitions))
    ids = np.asarray(partitions)
    return [int(p) for p in ids[index]]
