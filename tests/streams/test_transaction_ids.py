"""One transaction id, one outcome, across a worker restart and two workers; and ``simulate`` runs that never
reuse an id (features/ids.py). Real worker processes, Kafka and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from config.kafka import ensure_topics
from config.settings import Topics
from features import FEATURE_LIST, TransactionEvent
from fraudstream.workers import WorkerProcess
from schemas.scored import PER_DELIVERY_FIELDS
from streams.partitioner import partitions_for
from tests.fixtures.history import History, max_rel_diff, offline_probe_vectors, online_probe_vectors
from tests.fixtures.topics import (
    PARTITIONS,
    Collector,
    private_topics,
    produce,
    run_id,
    wait_caught_up,
)
from tests.fixtures.workers import HASHER, launch, wait_ready, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PER_DELIVERY = PER_DELIVERY_FIELDS


def first_result(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in PER_DELIVERY}


def changed(row: dict[str, Any], **fields: Any) -> bytes:
    return orjson.dumps({**row, **fields})


async def test_repeats_and_conflicts_across_a_worker_restart(
    kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    """Worker A scores a history and stops; worker B (same group, same Redis) gets the same records again
    (a producer resending them) and the same ids with other amounts: the repeats get A's results, the
    conflicts are dead-lettered, and the state equals the offline engine's on the history applied once."""
    run, topics = await private_topics(kafka_bootstrap, "restart")
    history = History.build(run, cards=20, per_card=15)
    env = worker_env(tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run)
    async with Collector(kafka_bootstrap, topics) as collector:
        first = launch(env, tmp_path / "worker-a.log")
        try:
            await wait_ready(first)
            await produce(kafka_bootstrap, history.records(topics))
            await collector.wait(lambda o: history.ids <= o.scored.keys(), 120, "the history", worker=first)
            await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=60)
        finally:
            first.stop()
        results = {t: first_result(r) for t, r in collector.out.scored.items()}
        resend = history.tx[::3]
        conflicting = history.tx[1::3]
        second = launch(env, tmp_path / "worker-b.log")
        try:
            await wait_ready(second)
            scored_before = collector.out.scored_total
            again = [(topics.transactions, r["card_id"].encode(), orjson.dumps(r)) for r in resend]
            others = [(topics.transactions, r["card_id"].encode(), changed(r, amount=r["amount"] + 100.0))
                      for r in conflicting]
            await produce(kafka_bootstrap, again + others)
            out = await collector.wait(
                lambda o: o.scored_total >= scored_before + len(resend) and len(o.dead) >= len(conflicting), 120,
                "the repeats and the conflicts", worker=second)
            await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=60)
        finally:
            second.stop()
    assert out.scored_total == scored_before + len(resend)  # the conflicts were not scored
    for row in resend:
        assert first_result(out.scored[row["transaction_id"]]) == results[row["transaction_id"]]
    reasons = {d["transaction_id"]: d["reason"] for d in out.dead.values()}
    assert reasons == {r["transaction_id"]: "duplicate:transaction_id:conflict" for r in conflicting}
    probes = history.probes()
    online = await online_probe_vectors(redis_url, probes)
    worst, feature = max_rel_diff(online, offline_probe_vectors(history, probes))
    assert worst <= 1e-6, f"the state differs from one application of the history: {worst} on {feature}"


def _two_partition_cards(run: str, pairs: int) -> list[tuple[str, str]]:
    """Card id pairs whose records land in different partitions of the transactions topic."""
    out: list[tuple[str, str]] = []
    i = 0
    while len(out) < pairs:
        a, b = f"{run}-a{i}", f"{run}-b{i}"
        pa, pb = partitions_for([a.encode(), b.encode()], list(range(PARTITIONS)))
        if pa != pb:
            out.append((a, b))
        i += 1
    return out


async def test_two_workers_let_the_first_content_of_an_id_win(
    kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    """Two workers share the partitions; each id is sent twice with different cards (so different
    partitions, usually different workers, at about the same time). Every id gets exactly one scored
    record, the other content is dead-lettered naming it, and the loser's card state never saw it."""
    run, topics = await private_topics(kafka_bootstrap, "two")
    env = worker_env(tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run)
    workers: list[WorkerProcess] = []
    pairs = _two_partition_cards(run, 150)
    rows: list[tuple[bytes, bytes]] = []
    for i, (card_a, card_b) in enumerate(pairs):
        base = {"transaction_id": f"{run}-{i}", "terminal_id": f"{run}-T{i % 10}", "amount": 10.0 + i,
                "currency": "EUR", "event_time": f"2026-03-01T{i // 60:02d}:{i % 60:02d}:00Z"}
        rows.append((card_a.encode(), orjson.dumps({**base, "card_id": card_a})))
        rows.append((card_b.encode(), orjson.dumps({**base, "card_id": card_b, "amount": 20.0 + i})))
    async with Collector(kafka_bootstrap, topics) as collector:
        try:
            for name in ("a", "b"):
                workers.append(launch(env, tmp_path / f"worker-{name}.log"))
            for worker in workers:
                await wait_ready(worker)
            await produce(kafka_bootstrap, [(topics.transactions, key, value) for key, value in rows])
            out = await collector.wait(lambda o: o.scored_total + o.dead_total >= len(rows), 180,
                                       "every record scored or dead-lettered")
            await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=60)
        finally:
            for worker in workers:
                worker.stop()
    assert all("worker ready" in w.output() for w in workers)
    assert out.scored_total == len(pairs) and len(out.scored) == len(pairs)
    assert sorted(d["transaction_id"] for d in out.dead.values()) == sorted(f"{run}-{i}" for i in range(len(pairs)))
    assert {d["reason"] for d in out.dead.values()} == {"duplicate:transaction_id:conflict"}
    for dead in out.dead.values():
        winner = out.scored[dead["transaction_id"]]
        assert dead["card_ref"] != winner["card_ref"]
    # Each losing card saw nothing: a probe on it finds no earlier transaction (count 1: the probe).
    losers = [d["card_ref"] for d in out.dead.values()]
    probes = [TransactionEvent(transaction_id=f"{run}-probe-{i}", card_ref=card, terminal_id=f"{run}-probe-T",
                               event_time=1_772_400_000.0, amount=1.0) for i, card in enumerate(losers)]
    vectors = await online_probe_vectors(redis_url, probes)
    count_30d = vectors[:, FEATURE_LIST.index("card_count_30d")]
    assert (count_30d == 1.0).all(), f"{int((count_30d != 1.0).sum())} losing cards counted the conflict"
    winners = {out.scored[f"{run}-{i}"]["card_ref"] for i in range(len(pairs))}
    assert winners | set(losers) == {HASHER.reference(c) for pair in pairs for c in pair}


async def test_three_default_simulate_runs_send_no_transaction_id_twice(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = run_id("simruns")
    topics = Topics(transactions=f"{run}.transactions", labels=f"{run}.labels")
    env = {**os.environ, "FRAUD_HOME": str(tmp_path), "FRAUD_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "FRAUD_TOPICS__TRANSACTIONS": topics.transactions, "FRAUD_TOPICS__LABELS": topics.labels}
    await ensure_topics(kafka_bootstrap, {topics.transactions: PARTITIONS, topics.labels: PARTITIONS})
    prefixes = []
    for _ in range(3):
        command = [sys.executable, "-m", "fraudstream", "simulate", "--count", "1500", "--warm-up-days", "0"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        prefixes.append(json.loads(done.stdout.strip().splitlines()[-1])["id_prefix"])
    assert len(set(prefixes)) == 3 and all(p.startswith("sim-") for p in prefixes)
    ids = await _all_transaction_ids(kafka_bootstrap, topics.transactions)
    assert len(ids) >= 3 * 1500
    assert len(set(ids)) == len(ids), f"{len(ids) - len(set(ids))} ids sent twice"


async def _all_transaction_ids(bootstrap: str, topic: str) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or
                                                                 await _partitions(consumer, topic))]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        ids: list[str] = []
        behind = set(partitions)
        while behind:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                ids += [orjson.loads(m.value)["transaction_id"] for m in messages]
            behind = {tp for tp in behind if await consumer.position(tp) < ends[tp]}
        return ids
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or {0}
