"""Fault 4c: the broker leading transactions partitions is SIGKILLed mid-stream, on a three-broker Kafka
(``LocalStack(brokers=3)``, what ``fraudstream stack up --brokers 3`` starts: topics with three replicas and
``min.insync.replicas=2``).

The victim is the leader of a transactions partition the worker is consuming at that moment (and that
still holds transactions to score), so the kill hits fetches, publishes and commits in flight.

Promise: the controller quorum (the two surviving voters) elects new leaders from the in-sync replicas;
every record a producer had acknowledged (``acks=all``: on at least two brokers) is on the new leader; the
worker follows the leaders by itself (its fetches, publishes and commits are retried after a metadata
refresh) and does not stop. Nothing is lost, redeliveries change no feature state, and the killed broker,
started again, catches up and rejoins the ISR.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from fraudstream.stack import LocalStack
from fraudstream.stack.process import free_port, is_alive
from tests.chaos.proxied import backend_errors, drain
from tests.fixtures.brokers import describe_partitions, wait_partitions
from tests.fixtures.history import (
    History,
    explain_difference,
    max_rel_diff,
    offline_probe_vectors,
    online_probe_vectors,
)
from tests.fixtures.topics import Collector, private_topics, produce
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

CARDS, PER_CARD = 150, 40  # 6,000 transactions over a few hours of event time, as a backlog
KILL_AFTER_SCORED = 800  # distinct ids scored when the leader is killed
MOVING_WINDOW_S = 3.0  # the victim's partitions count as being consumed if one of their ids was scored this recently


def consumed_now(first_scored_at: dict[str, float], partition_of: dict[str, int]) -> dict[int, int]:
    """Transactions partitions being consumed now: partition → ids of it first scored within the last
    ``MOVING_WINDOW_S``, for the partitions that still hold ids not scored yet."""
    since = time.time() - MOVING_WINDOW_S
    recent = Counter(partition_of[tx] for tx, at in first_scored_at.items() if at >= since)
    unscored = {p for tx, p in partition_of.items() if tx not in first_scored_at}
    return {p: n for p, n in recent.items() if p in unscored}


async def test_the_partition_leader_killed_mid_stream_loses_nothing_and_counts_nothing_twice(
    three_brokers: LocalStack, local_backend: str, tmp_path: Path
) -> None:
    stack = three_brokers
    state = stack.load()
    bootstrap, redis_url = state.bootstrap, state.redis_url
    run, topics = await private_topics(stack.connection(state), "leader-loss")  # 3 replicas, min.insync 2
    before = await describe_partitions(bootstrap, topics.transactions)
    assert all(len(r.replicas) == 3 and len(r.isr) == 3 for r in before.values()), before

    history = History.build(run, cards=CARDS, per_card=PER_CARD, seed=11)
    records = history.records(topics)
    positions = await produce(bootstrap, records)  # acks=all, idempotent: on two brokers at least
    partition_of = {orjson.loads(value)["transaction_id"]: pos[1]
                    for (topic, _, value), pos in zip(records, positions, strict=True) if topic == topics.transactions}
    port = free_port()
    env = worker_env(tmp_path, bootstrap, redis_url, local_backend, topics, run, FRAUD_BATCH_MAX_SIZE="64",
                     FRAUD_METRICS_PORT=str(port), FRAUD_KAFKA_REPLICATION_FACTOR="3",
                     FRAUD_KAFKA_MIN_INSYNC_REPLICAS="2")

    victim = 0
    async with Collector(bootstrap, topics) as collector:
        worker = launch(env, tmp_path / "worker.log")
        try:
            await wait_ready(worker, timeout_s=300)
            await collector.wait(lambda o: len(o.scored) >= KILL_AFTER_SCORED, 300,
                                 f"{KILL_AFTER_SCORED} scored before the kill", worker=worker)
            # The fault must hit work in flight: the victim leads a partition the worker is consuming right
            # now (ids of it scored within the window) that still holds transactions it has not scored.
            # (The worker does not consume its partitions evenly: in one run, 832 ids of two partitions were
            # scored before the first of the other two.)
            busy = await collector.wait(lambda o: bool(consumed_now(o.first_scored_at, partition_of)), 300,
                                        "a partition being consumed with transactions still to score",
                                        worker=worker)
            recent_by_partition = consumed_now(busy.first_scored_at, partition_of)
            leaders = await describe_partitions(bootstrap, topics.transactions)
            victim = leaders[max(recent_by_partition, key=lambda p: recent_by_partition[p])].leader
            led = {p for p, r in leaders.items() if r.leader == victim}
            killed_at = time.time()
            seen = dict(collector.out.first_scored_at)
            victim_pid = await asyncio.to_thread(stack.kill_broker, victim)
            assert not is_alive(victim_pid)
            survivors = ",".join(f"127.0.0.1:{b.port}" for i, b in enumerate(state.brokers, start=1) if i != victim)
            recent = [tx for tx, at in seen.items() if partition_of[tx] in led and at >= killed_at - MOVING_WINDOW_S]
            pending = {tx for tx, p in partition_of.items() if p in led and tx not in seen}
            print(f"killed broker {victim} (pid {victim_pid}), leader of transactions partitions {sorted(led)}: "
                  f"{len(recent)} of their ids scored in the {MOVING_WINDOW_S:.0f}s before, {len(pending)} "
                  f"not yet scored; {len(seen)} ids scored in all")
            assert recent and pending, "the kill hit no partition being consumed"

            # Leadership moved: new leaders from the ISR, the victim out of every ISR.
            elected = await wait_partitions(
                survivors, topics.transactions,
                lambda ps: all(ps[p].leader not in (victim, -1) for p in led) and all(victim not in r.isr
                                                                                     for r in ps.values()),
                "new leaders for the killed broker's partitions", timeout_s=180,
            )
            election_s = time.time() - killed_at
            print(f"new leaders after {election_s:.1f}s: {({p: elected[p].leader for p in sorted(led)})}")

            # The worker recovers by itself: the same process scores everything, and commits to the end.
            await collector.wait(lambda o: history.ids <= o.scored.keys(), 300, "every transaction", worker=worker)
            out, metrics = await drain(collector, history.ids, survivors, run, topics, worker, port)
            after_kill = [tx for tx in pending if out.first_scored_at[tx] >= killed_at]
            assert is_alive(worker.pid), worker.tail(60)
        finally:
            worker.stop()
            if victim:
                # The killed broker comes back on its ports and data, catches up and rejoins every ISR.
                restarted = time.monotonic()
                await asyncio.to_thread(stack.start_broker, victim, timeout_s=300)
                await wait_partitions(
                    bootstrap, topics.transactions, lambda ps: all(sorted(r.isr) == [1, 2, 3] for r in ps.values()),
                    "the restarted broker back in the ISR", timeout_s=300,
                )
                await wait_partitions(
                    bootstrap, topics.scored, lambda ps: all(sorted(r.isr) == [1, 2, 3] for r in ps.values()),
                    "the restarted broker back in the scored topic's ISR", timeout_s=300,
                )
                print(f"broker {victim} back in every ISR {time.monotonic() - restarted:.1f}s after its start")

    redelivered = out.scored_total - len(out.scored)
    resumed = min((out.first_scored_at[tx] for tx in after_kill), default=killed_at) - killed_at
    print(f"{len(out.scored)} ids in {out.scored_total} scored records ({redelivered} redelivered); "
          f"{len(after_kill)} of the victim's pending transactions scored after the kill, the first {resumed:.1f}s "
          f"after it; kafka errors {backend_errors(metrics, 'kafka')}")
    # Nothing lost, one outcome per id (after de-duplication by id), none dead-lettered.
    assert set(out.scored) == history.ids and not out.dead, out.dead_reasons()
    assert after_kill, "no transaction of the killed leader's partitions was scored after it died"
    # Nothing counted twice: the Redis state equals the offline engine's on the history applied once.
    probes = history.probes()
    online = await online_probe_vectors(redis_url, probes)
    offline = offline_probe_vectors(history, probes)
    diff, worst = max_rel_diff(online, offline)
    assert diff <= 1e-6, (
        f"state after the leader's loss differs from offline on {worst}: {diff}\n"
        + explain_difference(history, probes, online, offline, out.redelivered)
    )
