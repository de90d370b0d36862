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

import orjson
import pytest

from fraudstream.stack import LocalStack
from fraudstream.workers import WorkerProcess
from tests.fixtures.history import History, max_rel_diff, offline_probe_vectors, online_probe_vectors
from tests.fixtures.topics import Collector, private_topics, produce, wait_caught_up
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

CARDS, PER_CARD = 150, 40  # 6,000 transactions over a few hours of event time
BACKLOG_SHARE = 0.75  # of the records, produced before the worker starts; the rest after the restart
RESTART_AFTER_SCORED = 300  # distinct ids scored when the broker is restarted


async def test_broker_restart_mid_stream_loses_nothing(
    local_stack: LocalStack, kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    run, topics = await private_topics(kafka_bootstrap, "kafka")
    history = History.build(run, cards=CARDS, per_card=PER_CARD, seed=5)
    records = history.records(topics)
    head = int(len(records) * BACKLOG_SHARE)
    await produce(kafka_bootstrap, records[:head])
    backlog = {orjson.loads(value)["transaction_id"] for topic, _, value in records[:head]
               if topic == topics.transactions}
    env = worker_env(
        tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run, FRAUD_BATCH_MAX_SIZE="64"
    )

    workers: list[WorkerProcess] = []
    async with Collector(kafka_bootstrap, topics) as collector:
        try:
            workers.append(launch(env, tmp_path / "worker-1.log"))
            await wait_ready(workers[0])
            await collector.wait(lambda o: len(o.scored) >= RESTART_AFTER_SCORED, 120,
                                 f"{RESTART_AFTER_SCORED} scored before the restart")
            started = time.monotonic()
            await asyncio.to_thread(local_stack.restart_kafka)
            back_at = time.time()  # the broker answers again; record timestamps are this machine's clock
            print(f"broker restarted in {time.monotonic() - started:.1f}s; worker alive: {workers[0].alive()}")
            if not workers[0].alive():
                # Allowed by the promise (a supervisor restarts it), but say so: it resumes from offsets.
                print(f"worker exited during the broker restart:\n{workers[0].tail(20)}")
                workers.append(launch(env, tmp_path / "worker-2.log"))
                await wait_ready(workers[-1])
            await produce(kafka_bootstrap, records[head:])  # traffic after the restart, too
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 240, "every transaction")
            await wait_caught_up(kafka_bootstrap, run, topics.labels, timeout_s=120)
            await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=120)
            survived = workers[0].alive()
        finally:
            for worker in workers:
                worker.stop()

    assert set(out.scored) == history.ids and not out.dead
    # The fault hit work in flight: transactions of the backlog, in the topic before the restart began,
    # were still unscored when the broker went down and were scored only after it was back.
    after = sorted(tx for tx in backlog if out.first_scored_at[tx] >= back_at)
    print(f"{len(out.scored)} ids in {out.scored_total} scored records; {len(after)} of the {len(backlog)} "
          f"backlog transactions scored after the broker was back; first worker survived: {survived}")
    assert after, "the worker had scored the whole backlog before the broker went down: nothing was tested"
    assert survived, f"the worker died when the broker restarted:\n{workers[0].tail(60)}"
    probes = history.probes()
    diff, worst = max_rel_diff(await online_probe_vectors(redis_url, probes), offline_probe_vectors(history, probes))
    assert diff <= 1e-6, f"state after the broker restart differs from offline on {worst}: {diff}"
