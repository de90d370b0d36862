"""A real worker process scoring end to end with its feature state on a real 3-primary Redis Cluster
(``FRAUD_REDIS_CLUSTER=true``): every transaction scored once, state spread over the primaries, a
redelivery changes nothing, and the state gives the offline engine's features."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from redis.asyncio.cluster import RedisCluster

from config.settings import Topics
from features import FEATURE_LIST, RedisFeatureStore, TransactionEvent
from features.ids import TransactionIds
from features.offline import compute_offline
from features.online import entity_keys
from fraudstream.workers import WorkerProcess
from tests.fixtures.topics import OutputReader, private_topics, produce
from tests.fixtures.workers import launch, worker_env

pytestmark = pytest.mark.integration
PREFIX = "fs"  # the worker's default FRAUD_FEATURE_KEY_PREFIX
CARDS, COUNT = 7, 300


@pytest.fixture(scope="module")
async def run_topics(kafka_bootstrap: str) -> tuple[str, Topics]:
    return await private_topics(kafka_bootstrap, "cluster-e2e")


@pytest.fixture(scope="module")
def worker(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_cluster_url: str, local_backend: str,
    run_topics: tuple[str, Topics],
) -> Iterator[WorkerProcess]:
    run, topics = run_topics
    home = tmp_path_factory.mktemp("cluster-worker")
    env = worker_env(home, kafka_bootstrap, redis_cluster_url, local_backend, topics, app_id=run,
                     FRAUD_REDIS_CLUSTER="true")
    process = launch(env, home / "worker.log")
    assert process.wait_ready(timeout_s=120), process.tail()
    yield process
    process.stop()


def minutes(n: int) -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)


def transaction(tx_id: str, card: str, terminal: str, amount: float, at_minute: int) -> bytes:
    return json.dumps({
        "transaction_id": tx_id, "card_id": card, "terminal_id": terminal, "amount": amount,
        "currency": "EUR", "event_time": minutes(at_minute).isoformat().replace("+00:00", "Z"),
    }).encode()


async def test_a_worker_scores_against_the_cluster_and_its_state_equals_offline(
    worker: WorkerProcess, kafka_bootstrap: str, run_topics: tuple[str, Topics], cluster_client: RedisCluster,
) -> None:
    run, topics = run_topics
    # Each terminal is used by one card only: its transactions then come from one partition, in order. (A
    # terminal fed from several partitions sees some as late events, counted at its watermark, and offline
    # would need the worker's interleaving to agree; docs/features.md, "Effective time".)
    rows = [(f"{run}-{i}", f"{run}-card-{i % CARDS}", f"{run}-term-{i % CARDS}-{i // CARDS % 2}",
             5.0 + (i * 37) % 90, i) for i in range(COUNT)]
    records = [(topics.transactions, card.encode(), transaction(tx, card, term, amount, at))
               for tx, card, term, amount, at in rows]
    async with OutputReader(kafka_bootstrap, topics) as reader:
        await produce(kafka_bootstrap, records)
        out = await reader.read_until(lambda o: len(o.scored) >= COUNT, timeout_s=120)
        assert len(out.scored) == COUNT and not out.dead, worker.tail(60)
        count = out.scored_count
        assert count == COUNT  # each scored once
        # a redelivery of one transaction: its first result again, the cluster's state byte for byte unchanged
        tx, _, term, _, _ = rows[40]
        card_ref, first_score = out.scored[tx]["card_ref"], out.scored[tx]["score"]
        store = RedisFeatureStore(cluster_client, key_prefix=PREFIX)
        keys = [*entity_keys(store.key_prefix, "card", card_ref), *entity_keys(store.key_prefix, "terminal", term)]
        before = {k: await cluster_client.dump(k) for k in keys}
        assert before[keys[0]] and before[keys[3]]
        await produce(kafka_bootstrap, records[40:41])
        out = await reader.read_until(lambda o: o.scored_count >= count + 1, timeout_s=60)
    assert out.scored_count == count + 1
    assert out.scored[tx]["score"] == first_score
    assert {k: await cluster_client.dump(k) for k in keys} == before, "the redelivery changed the state"

    # the id records of this run and the entity state both live on every primary
    ids = TransactionIds(cluster_client, key_prefix=PREFIX)
    owners = {cluster_client.get_node_from_key(ids.key(r[0]).decode()).name for r in rows}  # type: ignore[union-attr]
    assert len(owners) == 3
    stored = [await cluster_client.hget(ids.key(r[0]).decode(), "o") for r in rows]
    assert all(stored), "a published result was not stored with its id"

    # one probe per card: the features the cluster's state gives equal the offline engine's on the history
    card_refs = {card: out.scored[tx]["card_ref"] for tx, card, *_ in rows}
    probes = [TransactionEvent(transaction_id=f"{run}-probe-{c}", card_ref=card_refs[f"{run}-card-{c}"],
                               terminal_id=f"{run}-term-{c}-0", event_time=minutes(COUNT + c).timestamp(),
                               amount=42.0 + c) for c in range(CARDS)]
    online = await store.apply_and_read(probes)
    history = pd.DataFrame({
        "transaction_id": [r[0] for r in rows] + [p.transaction_id for p in probes],
        "card_ref": [card_refs[r[1]] for r in rows] + [p.card_ref for p in probes],
        "terminal_id": [r[2] for r in rows] + [p.terminal_id for p in probes],
        "event_time": [minutes(r[4]).timestamp() for r in rows] + [p.event_time for p in probes],
        "amount": [r[3] for r in rows] + [p.amount for p in probes], "latitude": np.nan, "longitude": np.nan,
    })
    offline = compute_offline(history, None)[-CARDS:]
    differ = {(int(r), FEATURE_LIST.names[c]): (online[r, c], offline[r, c])
              for r, c in zip(*np.nonzero(~np.isclose(online, offline, rtol=1e-9, atol=1e-9)), strict=True)}
    assert not differ, differ
    assert "Traceback" not in worker.tail(400), worker.tail(80)
