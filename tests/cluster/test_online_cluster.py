"""The online engine and the id records on a real 3-primary Redis Cluster (started by the stack's code):
calls routed by slot owner, parity with the offline engine on a simulated history, the id-claim rules,
MOVED after a slot migration."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import redis
from redis.asyncio.cluster import RedisCluster

from features import RedisFeatureStore
from features.cluster import ClusterChannel
from features.ids import Claim, TransactionIds
from features.offline import compute_offline
from features.parity import TOLERANCE, compute_online, run_parity, transaction_events
from fraudstream.stack.redis_cluster import ClusterState, LocalRedisCluster
from training.simulated import load_simulated


def prefix() -> str:
    return f"fsclu:{uuid.uuid4().hex[:10]}"


async def test_a_batch_is_spread_over_every_primary_and_each_entity_stays_on_its_slot_owner(
    cluster_client: RedisCluster,
) -> None:
    transactions, _ = load_simulated("sim:300?seed=5&cards=40&terminals=60")
    store = RedisFeatureStore(cluster_client, key_prefix=prefix())
    try:
        await store.load_scripts()
        await store.apply_and_read(transaction_events(transactions))
        per_node: dict[str, int] = {}
        async for key in cluster_client.scan_iter(match=f"{store.key_prefix}:*", count=1000):
            owner = cluster_client.get_node_from_key(key)
            assert owner is not None
            per_node[owner.name] = per_node.get(owner.name, 0) + 1
        assert set(per_node) == {n.name for n in cluster_client.get_primaries()}  # all three hold state
    finally:
        assert await store.purge() > 0
        await store.close()


async def test_online_on_the_cluster_equals_offline_on_a_simulated_history(cluster_client: RedisCluster) -> None:
    transactions, labels = load_simulated("sim:5000?seed=3&cards=300&terminals=600")
    result = await run_parity(cluster_client, transactions, labels, batch_size=500)
    assert result.rows == len(transactions) == 5000
    assert result.ok, result.as_dict()
    assert result.max_rel_diff <= TOLERANCE


async def test_the_id_claim_rules_hold_on_the_cluster(cluster_client: RedisCluster) -> None:
    ids = TransactionIds(cluster_client, key_prefix=prefix())
    await ids.load_scripts()
    txs = [f"t{i}" for i in range(60)]  # ids hashed over all three primaries
    slots = {cluster_client.get_node_from_key(ids.key(t).decode()).name for t in txs}  # type: ignore[union-attr]
    assert len(slots) == 3
    first = await ids.claim([Claim(t, "aa", "transactions", 0, i) for i, t in enumerate(txs)]
                            + [Claim("t1", "aa", "transactions", 0, 100), Claim("t2", "bb", "transactions", 0, 101)])
    assert [r.status for r in first] == ["new"] * 60 + ["repeat", "conflict"]
    await ids.record_outcomes([(t, f"out-{t}".encode()) for t in txs])
    again = await ids.claim([Claim(t, "aa", "transactions", 1, 7) for t in txs])
    assert [(r.status, r.outcome) for r in again] == [("repeat", f"out-{t}".encode()) for t in txs]
    assert await ids.purge() == 60


async def test_a_migrated_slot_answers_moved_and_the_calls_follow_it(
    cluster_client: RedisCluster, redis_cluster: tuple[LocalRedisCluster, ClusterState]
) -> None:
    """A card's slot is moved (its keys MIGRATEd) to another primary between two batches: the client's slot
    map is stale, the old owner answers MOVED, the channel refreshes and the features continue exactly."""
    transactions, _ = load_simulated("sim:600?seed=11&cards=10&terminals=20")
    transactions = transactions.sort_values("event_time", kind="stable").reset_index(drop=True)
    store = RedisFeatureStore(cluster_client, key_prefix=prefix(), dedup_horizon_s=10 * 86_400.0)
    half = len(transactions) // 2
    try:
        await store.load_scripts()
        first = await compute_online(store, transactions.iloc[:half], None, batch_size=100)
        card = str(transactions["card_ref"].iloc[half])
        key = f"{store.key_prefix}:{{c:{card}}}:s"
        slot = cluster_client.keyslot(key)
        source = cluster_client.get_node_from_key(key)
        assert source is not None
        target = next(n for n in cluster_client.get_primaries() if n.name != source.name)
        _migrate_slot(slot, int(source.port), int(target.port))
        assert isinstance(store._channel, ClusterChannel)
        before = store._channel.refreshes
        second = await compute_online(store, transactions.iloc[half:], None, batch_size=100)
        assert store._channel.refreshes > before  # the stale map was refreshed after MOVED
        assert cluster_client.get_node_from_key(key).name == target.name  # type: ignore[union-attr]
    finally:
        await store.purge()
        await store.close()
    offline = compute_offline(transactions, None)
    online = np.vstack([first, second])
    assert np.allclose(online, offline, rtol=TOLERANCE, atol=TOLERANCE, equal_nan=False)


async def test_claims_in_a_slot_being_migrated_follow_ask(
    cluster_client: RedisCluster, redis_cluster: tuple[LocalRedisCluster, ClusterState]
) -> None:
    """Mid-migration (slot MIGRATING on its owner, IMPORTING on another) one id's record has moved and
    another id of the same slot is new: the owner answers ASK for both, the channel sends them with ASKING
    to the importing node, and the claim rules hold (a repeat stays a repeat, the new id is created there)."""
    ids = TransactionIds(cluster_client, key_prefix=prefix())
    await ids.load_scripts()
    by_slot: dict[int, str] = {}
    for n in range(100_000):  # two ids whose records share a slot
        slot = cluster_client.keyslot(ids.key(f"a{n}"))
        if slot in by_slot:
            moved, fresh = by_slot[slot], f"a{n}"
            break
        by_slot[slot] = f"a{n}"
    (first,) = await ids.claim([Claim(moved, "aa", "transactions", 0, 1)])
    assert first.status == "new"
    source = cluster_client.get_node_from_key(ids.key(moved).decode())
    assert source is not None
    target = next(n for n in cluster_client.get_primaries() if n.name != source.name)
    src: Any = redis.Redis(port=int(source.port))
    dst: Any = redis.Redis(port=int(target.port))
    try:
        src_id, dst_id = src.execute_command("CLUSTER MYID").decode(), dst.execute_command("CLUSTER MYID").decode()
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        src.execute_command("MIGRATE", "127.0.0.1", int(target.port), "", 0, 5000, "KEYS", ids.key(moved))
        assert isinstance(ids._channel, ClusterChannel)
        results = await ids.claim([Claim(moved, "aa", "transactions", 0, 2), Claim(fresh, "bb", "transactions", 0, 3),
                                   Claim(moved, "zz", "transactions", 0, 4)])
        assert [r.status for r in results] == ["repeat", "new", "conflict"]
        assert ids._channel.asked == 3
        for node in (dst, src):
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        assert dst.exists(ids.key(moved), ids.key(fresh)) == 2  # both records on the importing node
        again = await ids.claim([Claim(fresh, "bb", "transactions", 0, 5)])
        assert again[0].status == "repeat"
    finally:
        src.close()
        dst.close()
    await ids.purge()


def _migrate_slot(slot: int, source_port: int, target_port: int) -> None:
    """What ``redis-cli --cluster reshard`` does for one slot: IMPORTING/MIGRATING, MIGRATE every key, NODE."""
    src: Any = redis.Redis(port=source_port)  # Any: redis-py's execute_command is untyped
    dst: Any = redis.Redis(port=target_port)
    try:
        src_id, dst_id = src.execute_command("CLUSTER MYID").decode(), dst.execute_command("CLUSTER MYID").decode()
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target_port, "", 0, 5000, "KEYS", *keys)
        for node in (dst, src):
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
    finally:
        src.close()
        dst.close()
