"""Fault 2: Redis restarts mid-stream (append-only file on, as in docker-compose); Redis loses its data.

Promises: while Redis is away the stream pauses (the batch is retried, never skipped); after the restart
the worker reconnects, reloads its scripts and goes on; nothing is lost and, because the AOF kept the
state, the features equal the offline engine's. When Redis lost its data, ``fraudstream features
rebuild`` replays the topics through the online engine and the state again equals the offline engine's.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from fraudstream.stack import LocalStack
from tests.fixtures.history import History, max_rel_diff, offline_probe_vectors, online_probe_vectors
from tests.fixtures.topics import Collector, private_topics, produce, wait_caught_up
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]

CARDS, PER_CARD = 120, 40
BACKLOG_SHARE = 0.25  # of the records, produced before the worker starts; the rest while Redis restarts
RESTART_AFTER_SCORED = 500  # distinct ids scored when Redis is restarted
REST_OVER_S = 8.0  # the rest arrives over this long, the restart one second into it
REBUILD_CARDS, REBUILD_PER_CARD = 100, 40


async def test_redis_restart_mid_stream_loses_nothing(
    local_stack: LocalStack, kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    run, topics = await private_topics(kafka_bootstrap, "redis")
    history = History.build(run, cards=CARDS, per_card=PER_CARD, seed=2)
    records = history.records(topics)
    head = int(len(records) * BACKLOG_SHARE)
    await produce(kafka_bootstrap, records[:head])
    env = worker_env(
        tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run, FRAUD_BATCH_MAX_SIZE="64"
    )

    async with Collector(kafka_bootstrap, topics) as collector:
        worker = launch(env, tmp_path / "worker.log")
        try:
            await wait_ready(worker)
            await collector.wait(lambda o: len(o.scored) >= RESTART_AFTER_SCORED, 120,
                                 f"{RESTART_AFTER_SCORED} scored before the restart")
            # The rest arrives while Redis restarts: a worker this fast would otherwise be done before the
            # restart (the check below then fails: nothing would have been tested).
            rest = asyncio.create_task(produce(kafka_bootstrap, records[head:],
                                               rate=(len(records) - head) / REST_OVER_S))
            await asyncio.sleep(1.0)
            await asyncio.to_thread(local_stack.restart_redis)
            await rest
            assert worker.alive(), f"the worker died when Redis restarted:\n{worker.tail(60)}"
            out = await collector.wait(
                lambda o: history.ids <= o.scored.keys(), 180, "every transaction", worker=worker
            )
            await wait_caught_up(kafka_bootstrap, run, topics.labels)
            await wait_caught_up(kafka_bootstrap, run, topics.transactions)
            assert worker.alive(), worker.tail(60)
        finally:
            worker.stop()
    assert set(out.scored) == history.ids and not out.dead
    log = worker.log.read_text(errors="replace")
    assert "feature state in Redis failed" in log, "the restart did not hit the stream: nothing was tested"

    probes = history.probes()
    offline = offline_probe_vectors(history, probes)
    diff, worst = max_rel_diff(await online_probe_vectors(redis_url, probes), offline)
    assert diff <= 1e-6, f"state after the Redis restart differs from offline on {worst}: {diff}"


async def test_rebuild_restores_the_state_after_redis_lost_its_data(
    local_stack: LocalStack, kafka_bootstrap: str, redis_url: str, local_backend: str, tmp_path: Path
) -> None:
    """The topics hold the history; Redis is empty (a new instance): ``fraudstream features rebuild``
    replays the topics through the online engine and the state equals the offline engine's."""
    run, topics = await private_topics(kafka_bootstrap, "rebuild")
    history = History.build(run, cards=REBUILD_CARDS, per_card=REBUILD_PER_CARD, seed=3)
    bad = [(topics.transactions, b"bad", b"not json"), (topics.labels, b"bad", b'{"is_fraud": "maybe"}')]
    await produce(kafka_bootstrap, history.records(topics) + bad)
    env = worker_env(tmp_path, kafka_bootstrap, redis_url, local_backend, topics, run)
    client = aioredis.Redis.from_url(redis_url)
    await client.flushall()  # Redis lost its data (other tests' state too: each test compares its own)
    await client.aclose()

    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "fraudstream", "features", "rebuild", "--verify"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["transactions"] == len(history.tx)
    assert report["labels"] == len(history.labels)
    assert report["rejected"] == 2
    assert report["max_rel_diff"] <= 1e-6
    probes = history.probes()
    offline = offline_probe_vectors(history, probes)
    diff, worst = max_rel_diff(await online_probe_vectors(redis_url, probes), offline)
    assert diff <= 1e-6, f"rebuilt state differs from offline on {worst}: {diff}"

    # A second rebuild over the now non-empty state is refused (it would double-count old transactions).
    again = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "fraudstream", "features", "rebuild"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert again.returncode == 3, again.stderr[-2000:]
    assert "--replace" in again.stderr
