"""The vectorised partitioner picks the same partition as aiokafka's (Kafka's) default partitioner."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.partitioner as vectorised


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=50))
def test_hash_equals_the_reference(keys: list[bytes]) -> None:
    expected = [murmur2(bytearray(k)) & 0xFFFFFFFF for k in keys]
    assert vectorised.murmur2(keys).tolist() == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=50), st.integers(1, 12))
def test_partition_equals_the_default_partitioner(keys: list[bytes], count: int) -> None:
    partitions = list(range(count))
    reference = DefaultPartitioner()
    assert vectorised.partitions_for(keys, partitions) == [reference(k, partitions, partitions) for k in keys]


def test_card_references_spread_over_partitions() -> None:
    keys = [f"{i:032x}".encode() for i in range(4000)]
    counts = [vectorised.partitions_for(keys, [0, 1, 2, 3]).count(p) for p in range(4)]
    assert min(counts) > 800
