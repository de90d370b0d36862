"""A full disk under Redis's append-only file, mid-stream.

A redis-server of the test's own (started with the stack's ``redis_command``: AOF on, fsync every second)
keeps its data directory on a small tmpfs; while transactions stream, a filler file takes every free byte,
so Redis's next AOF write fails with ENOSPC and Redis refuses every write with ``-MISCONF``. After a while
the filler is removed; Redis retries the AOF write by itself and takes writes again.

Promises (docs/reliability.md): the worker pauses while the disk is full (its feature calls are refused and
retried; nothing is scored, nothing acked), says so (``… failed (… MISCONF …); retrying`` in its log,
``fraudstream_backend_errors_total{backend="redis"}``) and resumes by itself once space is freed; nothing is
lost, none dead-lettered, every offset committed, and nothing is counted twice (the feature state equals the
offline engine's on the history applied once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from fraudstream.stack import process
from fraudstream.stack.redis import redis_command, wait_healthy
from tests.chaos.proxied import backend_errors, drain, scored_at
from tests.fixtures.disk import fill, require_mount, small_tmpfs
from tests.fixtures.history import History, max_rel_diff, offline_probe_vectors, online_probe_vectors
from tests.fixtures.topics import Collected, Collector, private_topics, produce, run_topics
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
TMPFS_MB = 32  # the AOF grows by ~2.8 KB per transaction (fraudstream/stack/redis.py): room for the history
CARDS, PER_CARD, RATE = 60, 40, 60.0
START_AFTER_SCORED = 200
FULL_S = 12.0  # the disk stays full this long


@contextlib.contextmanager
def aof_redis(data_dir: Path, log_dir: Path) -> Iterator[str]:
    """A redis-server with the stack's own command line (AOF on) whose data directory is ``data_dir``."""
    port = process.free_port()
    command = redis_command(port, data_dir, log_dir / "redis.log")
    pid = process.spawn(command, log_path=log_dir / "redis.stdout.log")
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_healthy(url, timeout_s=10, alive=lambda: process.is_alive(pid))
        yield url
    finally:
        process.stop(pid, timeout_s=10)


def aof_write_status(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        return str(client.info("persistence").get("aof_last_write_status"))
    finally:
        client.close()


@dataclass
class Run:
    out: Collected
    metrics: dict[str, float]
    during: str
    """The worker's log while the disk was full."""
    filled_at: float
    refused_at: float | None
    freed_at: float
    resumed_at: float


async def stream_through_a_full_disk(
    kafka: str, redis_url: str, data_dir: Path, backend: str, tmp_path: Path, history: History, prefix: str
) -> Run:
    run = history.run
    topics = run_topics(run)
    port = process.free_port()
    env = worker_env(tmp_path, kafka, redis_url, backend, topics, run, FRAUD_METRICS_PORT=str(port),
                     FRAUD_FEATURE_KEY_PREFIX=prefix)
    async with Collector(kafka, topics) as collector:
        worker = launch(env, tmp_path / "worker.log")
        try:
            await wait_ready(worker)
            producing = asyncio.create_task(produce(kafka, history.records(topics), rate=RATE))
            await collector.wait(lambda o: len(o.scored) >= START_AFTER_SCORED, 120, "scores before the fill",
                                 worker=worker)
            log_before = len(worker.output())
            filled_at = time.time()
            filler = fill(data_dir)
            refused_at = None
            while time.time() < filled_at + FULL_S:
                if refused_at is None and aof_write_status(redis_url) == "err":
                    refused_at = time.time()
                await asyncio.sleep(0.2)
            during = worker.output()[log_before:]
            filler.unlink()
            freed_at = time.time()
            await collector.wait(lambda o: any(scored_at(r) > freed_at for r in o.scored.values()), 60,
                                 "the stream to move again after the disk was freed", worker=worker)
            resumed_at = min(scored_at(r) for r in collector.out.scored.values() if scored_at(r) > freed_at)
            await producing
            out, metrics = await drain(collector, history.ids, kafka, run, topics, worker, port)
        finally:
            worker.stop()
    return Run(out, metrics, during, filled_at, refused_at, freed_at, resumed_at)


async def test_redis_disk_full_mid_stream_pauses_and_resumes_losing_nothing(
    kafka_bootstrap: str, local_backend: str, tmp_path: Path
) -> None:
    require_mount()
    run, _ = await private_topics(kafka_bootstrap, "fulldisk")
    history = History.build(run, cards=CARDS, per_card=PER_CARD, seed=11, label_share=0.05)
    prefix = f"fs-{run}"
    probes = history.probes()
    with small_tmpfs(tmp_path / "aof", TMPFS_MB) as data_dir:
        with aof_redis(data_dir, tmp_path) as redis_url:
            r = await stream_through_a_full_disk(kafka_bootstrap, redis_url, data_dir, local_backend, tmp_path,
                                                 history, prefix)
            assert aof_write_status(redis_url) == "ok"
        # What the worker acked must be on disk, not only in Redis's memory: a new redis-server on the same
        # directory rebuilds the state from the AOF alone, and that state is compared with the offline one.
        with aof_redis(data_dir, tmp_path / "restarted") as reloaded_url:
            online = await online_probe_vectors(reloaded_url, probes, key_prefix=prefix)

    assert r.refused_at is not None, "Redis never failed an AOF write: the disk was not full"
    assert set(r.out.scored) == history.ids, "transactions lost"
    assert not r.out.dead, r.out.dead_reasons()
    paused = [x for x in r.out.scored.values() if r.refused_at + 1.0 <= scored_at(x) < r.freed_at]
    assert not paused, f"{len(paused)} records scored while Redis refused writes"
    assert "MISCONF" in r.during and "retrying" in r.during, r.during[-3000:]
    errors = backend_errors(r.metrics, "redis")
    assert sum(errors.values()) > 0, r.metrics
    diff, worst = max_rel_diff(online, offline_probe_vectors(history, probes))
    assert diff <= 1e-6, f"the state rebuilt from the AOF differs from the offline engine on {worst}: {diff}"
    print(f"AOF write refused {r.refused_at - r.filled_at:.1f}s after the fill; stream moving again "
          f"{r.resumed_at - r.freed_at:.1f}s after the filler was removed; redis errors {errors}")
