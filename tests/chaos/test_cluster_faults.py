"""Faults of a worker scoring a backlog with its state on a real Redis Cluster (3 primaries, one replica each,
started by the stack's code; a fresh one per test):

- a primary SIGKILLed mid-stream with WAIT on (``FRAUD_REDIS_WAIT_REPLICAS=1``): its replica is promoted, the
  stream pauses while the shard has no replica to confirm writes (``ReplicasBehind`` in the log), the killed
  node comes back as the promoted one's replica, and the stream goes on;
- ``redis-cli --cluster reshard`` moving ``RESHARD_SLOTS`` slots between primaries mid-stream (MOVED / ASK),
  WAIT on;
- the worker SIGKILLed mid-stream and restarted (the chaos suite's worker-kill case), default settings.

Promise, each time: every transaction is scored (nothing lost), and the cluster's state equals the offline
engine's on the history applied once (nothing lost from the state, nothing counted twice).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis

from fraudstream.stack import LocalStack
from fraudstream.stack.process import is_alive
from fraudstream.stack.redis_cluster import ClusterState, LocalRedisCluster
from fraudstream.workers import WorkerProcess
from tests.fixtures.history import (
    History,
    explain_difference,
    max_rel_diff,
    offline_probe_vectors,
    online_probe_vectors,
)
from tests.fixtures.redis_cluster import fresh_redis_cluster
from tests.fixtures.topics import Collected, Collector, private_topics, produce, wait_caught_up
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
__all__ = ["fresh_redis_cluster"]  # the fixture, used by name

CARDS, PER_CARD = 150, 40  # 6,000 transactions (and ~300 labels), as the single-node worker-kill case
FAULT_AFTER_SCORED = 800
RESHARD_SLOTS = 600  # of a primary's 5,461

Relaunch = Callable[[str], WorkerProcess]
"""Starts another worker with the same settings, logging to the named file."""
Fault = Callable[[WorkerProcess, Collector, Relaunch], Awaitable[WorkerProcess]]
"""Applied once ``FAULT_AFTER_SCORED`` ids are scored; returns the worker that goes on (the same or a new one)."""


async def score_through(
    fault: Fault, *, cluster: ClusterState, kafka_bootstrap: str, backend: str, home: Path, name: str,
    **settings: str,
) -> tuple[Collected, History, list[WorkerProcess]]:
    """A backlog scored by a worker on ``cluster``, ``fault`` applied mid-stream; checks that every
    transaction was scored, the group committed everything, and the cluster's state equals offline."""
    run, topics = await private_topics(kafka_bootstrap, name)
    history = History.build(run, cards=CARDS, per_card=PER_CARD)
    await produce(kafka_bootstrap, history.records(topics))  # a backlog: the fault surely lands mid-stream
    env = worker_env(home, kafka_bootstrap, cluster.url, backend, topics, run, FRAUD_REDIS_CLUSTER="true",
                     FRAUD_BATCH_MAX_SIZE="64", FRAUD_KAFKA_SESSION_TIMEOUT_S="10", **settings)
    workers = [launch(env, home / "worker-1.log")]

    def relaunch(log_name: str) -> WorkerProcess:
        return launch(env, home / log_name)

    try:
        async with Collector(kafka_bootstrap, topics) as collector:
            await wait_ready(workers[0])
            await collector.wait(lambda o: len(o.scored) >= FAULT_AFTER_SCORED, 180,
                                 f"{FAULT_AFTER_SCORED} scored before the fault", worker=workers[0])
            survivor = await fault(workers[0], collector, relaunch)
            if survivor is not workers[0]:
                workers.append(survivor)
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 300,
                                       "every transaction after the fault", worker=survivor)
            await wait_caught_up(kafka_bootstrap, run, topics.transactions)
            await wait_caught_up(kafka_bootstrap, run, topics.labels)
    finally:
        for worker in workers:
            worker.stop()
    assert "Traceback" not in workers[-1].tail(400), workers[-1].tail(60)
    assert set(out.scored) == history.ids and not out.dead
    probes = history.probes()
    online = await online_probe_vectors(cluster.url, probes, cluster=True)
    offline = offline_probe_vectors(history, probes)
    diff, worst = max_rel_diff(online, offline)
    assert diff <= 1e-6, (f"online state differs from offline on {worst}: {diff}\n"
                          + explain_difference(history, probes, online, offline, out.redelivered))
    return out, history, workers


def role(port: int) -> str:
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        return str(client.info("replication")["role"])
    finally:
        client.close()


async def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:.0f}s: {what}")
        await asyncio.sleep(0.1)


async def test_a_primary_killed_mid_stream_with_wait_loses_nothing(
    fresh_redis_cluster: tuple[LocalRedisCluster, ClusterState], local_stack: LocalStack, kafka_bootstrap: str,
    local_backend: str, tmp_path: Path,
) -> None:
    cluster, state = fresh_redis_cluster
    victim = state.nodes[0].port  # a primary, and the seed node of the worker's URL
    assert role(victim) == "master"
    paused: list[float] = []

    async def kill_primary(worker: WorkerProcess, collector: Collector, _: Relaunch) -> WorkerProcess:
        cluster.kill_node(victim)
        killed = time.monotonic()
        # the replica is promoted, and has no replica of its own: no write on that shard can be confirmed,
        # the worker retries (WAIT falls short) instead of acking
        await wait_for(lambda: "ReplicasBehind" in worker.tail(2000), 60, "the worker reports WAIT falling short")
        held = collector.out.scored_total
        await asyncio.sleep(1.0)  # (a short look: the stream holds while the shard cannot confirm)
        assert collector.out.scored_total - held < 64 * 2, "the stream went on without confirmed writes"
        cluster.start_node(victim)  # back as the promoted node's replica: WAIT is satisfied again
        await wait_for(lambda: role(victim) == "slave", 60, "the killed primary rejoins as a replica")
        paused.append(time.monotonic() - killed)
        return worker

    out, _, workers = await score_through(
        kill_primary, cluster=state, kafka_bootstrap=kafka_bootstrap, backend=local_backend, home=tmp_path,
        name="cluster-kill-primary", FRAUD_REDIS_WAIT_REPLICAS="1")
    log = workers[0].tail(5000)
    assert "Redis writes confirmed by 1 replica(s)" in log
    assert "recovered after" in log  # the retry path logged the pause's end
    print(f"paused {paused[0]:.1f}s; {out.scored_total - len(out.scored)} records scored twice (not acked "
          "before the fault)")


async def test_a_reshard_mid_stream_loses_nothing(
    fresh_redis_cluster: tuple[LocalRedisCluster, ClusterState], local_stack: LocalStack, kafka_bootstrap: str,
    local_backend: str, tmp_path: Path,
) -> None:
    cluster, state = fresh_redis_cluster
    source, target = state.nodes[0].port, state.nodes[1].port
    assert role(source) == role(target) == "master"
    during: list[int] = []

    async def reshard(worker: WorkerProcess, collector: Collector, _: Relaunch) -> WorkerProcess:
        before = len(collector.out.scored)
        report = await asyncio.to_thread(cluster.reshard, source, target, RESHARD_SLOTS)
        during.append(len(collector.out.scored) - before)
        assert "Moving slot" in report
        return worker

    await score_through(reshard, cluster=state, kafka_bootstrap=kafka_bootstrap, backend=local_backend,
                        home=tmp_path, name="cluster-reshard", FRAUD_REDIS_WAIT_REPLICAS="1")
    assert during[0] > 0, "nothing was scored while the slots moved: the reshard did not overlap the stream"
    owned = redis.Redis(port=target).execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    target_slots = sum(int(e[1]) - int(e[0]) + 1 for e in owned if int(e[2][1]) == target)
    assert target_slots >= 5461 + RESHARD_SLOTS, target_slots
    print(f"{during[0]} ids scored while {RESHARD_SLOTS} slots moved")


async def test_worker_sigkill_on_the_cluster_loses_nothing(
    fresh_redis_cluster: tuple[LocalRedisCluster, ClusterState], local_stack: LocalStack, kafka_bootstrap: str,
    local_backend: str, tmp_path: Path,
) -> None:
    _, state = fresh_redis_cluster

    async def kill_worker(worker: WorkerProcess, _: Collector, relaunch: Relaunch) -> WorkerProcess:
        os.kill(worker.pid, signal.SIGKILL)
        worker.stop()
        assert not is_alive(worker.pid)
        second = relaunch("worker-2.log")
        await wait_ready(second)
        return second

    out, history, _ = await score_through(kill_worker, cluster=state, kafka_bootstrap=kafka_bootstrap,
                                          backend=local_backend, home=tmp_path, name="cluster-crash")
    # the kill hit batches published and not committed: they were delivered again, and changed no state
    assert out.redelivered, "no record was redelivered after the kill: the crash hit no uncommitted batch"
    assert out.scored_total < 2 * len(history.tx)
