"""Fault 4: the Kafka broker restarts mid-stream (same ports, same log directory).

Promise: the worker keeps running (or, if it must stop, a restart resumes from the committed offsets):
publishing is retried until the broker acknowledges, offsets are committed only for published batches, so
every transaction ends up scored; duplicates are allowed (at-least-once) and the features are unchanged by
them (the state equals the offline engine's).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fraudstream.stack import LocalStack
from tests.chaos.harness import (
    Collector,
    History,
    WorkerProcess,
    create_topics,
    launch,
    max_rel_diff,
    offline_probe_vectors,
    online_probe_vectors,
    produce,
    run_id,
    run_topics,
    wait_caught_up,
    wait_ready,
    worker_env,
)

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


async def test_broker_restart_mid_stream_loses_nothing(
    local_stack: LocalStack, kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    run = run_id("kafka")
    topics = run_topics(run)
    await create_topics(kafka_bootstrap, topics)
    history = History.build(run, cards=150, per_card=40, seed=5)
    records = history.records(topics)
    half = len(records) // 2
    await produce(kafka_bootstrap, records[:half])
    env = worker_env(
        tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run, FRAUD_BATCH_MAX_SIZE="64"
    )

    workers: list[WorkerProcess] = []
    async with Collector(kafka_bootstrap, topics) as collector:
        try:
            workers.append(launch(env, tmp_path / "worker-1.log"))
            await wait_ready(workers[0])
            await collector.wait(lambda o: len(o.scored) >= 1000, 120, "1000 scored before the restart")
            started = time.monotonic()
            await asyncio.to_thread(local_stack.restart_kafka)
            print(f"broker restarted in {time.monotonic() - started:.1f}s; worker alive: {workers[0].alive()}")
            if not workers[0].alive():
                # Allowed by the promise (a supervisor restarts it), but say so: it resumes from offsets.
                print(f"worker exited during the broker restart:\n{workers[0].tail(20)}")
                workers.append(launch(env, tmp_path / "worker-2.log"))
                await wait_ready(workers[-1])
            await produce(kafka_bootstrap, records[half:])  # traffic after the restart, too
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 240, "every transaction")
            await wait_caught_up(kafka_bootstrap, run, topics.labels, timeout_s=120)
            await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=120)
            survived = workers[0].alive()
        finally:
            for worker in workers:
                worker.stop()

    assert set(out.scored) == history.ids and not out.dead
    print(f"{len(out.scored)} ids in {out.scored_total} scored records; first worker survived: {survived}")
    assert survived, f"the worker died when the broker restarted:\n{workers[0].tail(60)}"
    probes = history.probes()
    diff, worst = max_rel_diff(await online_probe_vectors(redis_url, probes), offline_probe_vectors(history, probes))
    assert diff <= 1e-6, f"state after the broker restart differs from offline on {worst}: {diff}"
