"""WAIT on a real Redis Cluster (3 primaries, one replica each): each node a confirmed batch touched ends its
round with the marker write (in a slot it owns) and WAIT; asking for more replicas than a primary has is a
``ReplicasBehind``, never a silent pass."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from redis.asyncio.cluster import RedisCluster

from features import RedisFeatureStore
from features.cluster import ClusterChannel
from features.parity import transaction_events
from features.replication import ReplicasBehind
from training.simulated import load_simulated

pytestmark = pytest.mark.integration


async def test_wait_confirms_each_node_and_a_shortfall_raises(cluster_client: RedisCluster) -> None:
    transactions, _ = load_simulated("sim:300?seed=5&cards=60&terminals=90")
    events = transaction_events(transactions.sort_values("event_time", kind="stable").reset_index(drop=True))
    prefix = f"fswait:{uuid.uuid4().hex[:8]}"
    store = RedisFeatureStore(cluster_client, key_prefix=prefix, wait_replicas=1, wait_timeout_ms=2000)
    plain = RedisFeatureStore(cluster_client, key_prefix=f"{prefix}-ref")
    greedy = RedisFeatureStore(cluster_client, key_prefix=f"{prefix}-2", wait_replicas=2, wait_timeout_ms=100)
    try:
        for s in (store, plain, greedy):
            await s.load_scripts()
        channel = store._channel
        assert isinstance(channel, ClusterChannel)
        out = await store.apply_and_read(events[:150])
        assert channel.confirmed_rounds == 3  # the batch touched all three primaries: each confirmed
        np.testing.assert_array_equal(out, await plain.apply_and_read(events[:150]))
        # one marker key per primary, each in a slot that primary owns
        for node in cluster_client.get_primaries():
            markers = [k async for k in cluster_client.scan_iter(match=f"{prefix}:durable:*", target_nodes=node)]
            assert len(markers) == 1, (node.name, markers)
        with pytest.raises(ReplicasBehind, match="of 2 replicas confirmed"):
            await greedy.apply_and_read(events[150:])  # each primary has one replica
    finally:
        for s in (store, plain, greedy):
            await s.purge()
            await s.close()
