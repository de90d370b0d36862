"""A full disk under the Kafka broker's log directory, mid-stream.

A stack of the test's own (``LocalStack``: its own broker and Redis) keeps the broker's log directory on a
small tmpfs. The transactions are in the topic before the worker starts (so the test's own producer never
meets the full disk); while the worker works through them, a filler file takes every free byte, so the
broker's next append (the worker's scored records, its offset commits) fails with ENOSPC. Kafka takes a log
directory that failed a write offline, and a broker whose only log directory is offline stops; it does not
come back by itself when space is freed. So the filler is removed and the broker restarted (same ports, same
directory), as an operator or a supervisor would.

Promises (docs/reliability.md): nothing is acked that was not stored — the worker commits a transaction's
offset only after the broker acknowledged its scored record, so after the restart every transaction is
scored (a record the broker lost with its disk is scored again from the committed offset; none is
skipped); none is dead-lettered; the worker pauses while the broker is gone, says so, and resumes by itself
once it is back; and nothing is counted twice (the feature state equals the offline engine's on the history
applied once, although some records were processed again).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from fraudstream.stack import LocalStack, process
from tests.chaos.proxied import backend_errors, drain, scored_at
from tests.fixtures.disk import fill, require_mount, small_tmpfs
from tests.fixtures.history import History, max_rel_diff, offline_probe_vectors, online_probe_vectors
from tests.fixtures.topics import Collector, private_topics, produce
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
TMPFS_MB = 64  # the history (~3 MB with its labels), the metadata log, sparse index files
CARDS, PER_CARD = 150, 40  # 6,000 transactions: the worker is still busy with them when the disk fills
FILL_AFTER_SCORED = 300
FULL_S = 15.0


async def test_broker_log_dir_full_mid_stream_loses_nothing(local_backend: str, tmp_path: Path) -> None:
    require_mount()
    home = tmp_path / "stack"
    with small_tmpfs(home / "kafka" / "data", TMPFS_MB) as data_dir:
        stack = LocalStack(home)
        state = await asyncio.to_thread(stack.up, timeout_s=180)
        try:
            kafka, redis_url = state.bootstrap, state.redis_url
            run, topics = await private_topics(kafka, "brokerdisk")
            history = History.build(run, cards=CARDS, per_card=PER_CARD, seed=13, label_share=0.05)
            await produce(kafka, history.records(topics))
            prefix = f"fs-{run}"
            port = process.free_port()
            env = worker_env(tmp_path, kafka, redis_url, local_backend, topics, run, FRAUD_METRICS_PORT=str(port),
                             FRAUD_FEATURE_KEY_PREFIX=prefix)
            async with Collector(kafka, topics) as collector:
                worker = launch(env, tmp_path / "worker.log")
                try:
                    await wait_ready(worker)
                    await collector.wait(lambda o: len(o.scored) >= FILL_AFTER_SCORED, 120,
                                         "scores before the fill", worker=worker)
                    log_before = len(worker.output())
                    filled_at = time.time()
                    filler = fill(data_dir)
                    broker_exited_at = None
                    while time.time() < filled_at + FULL_S:
                        if broker_exited_at is None and not process.is_alive(stack.load().kafka.pid):
                            broker_exited_at = time.time()
                        await asyncio.sleep(0.2)
                    scored_full = collector.out.scored_total
                    await asyncio.sleep(3.0)
                    moved_while_full = collector.out.scored_total - scored_full
                    during = worker.output()[log_before:]
                    filler.unlink()
                    freed_at = time.time()
                    await asyncio.to_thread(stack.restart_kafka)
                    restarted_at = time.time()
                    await collector.wait(lambda o: any(scored_at(r) > freed_at for r in o.scored.values()), 120,
                                         "the stream to move again after the restart", worker=worker)
                    resumed_at = min(scored_at(r) for r in collector.out.scored.values() if scored_at(r) > freed_at)
                    out, metrics = await drain(collector, history.ids, kafka, run, topics, worker, port)
                    after = worker.output()[log_before + len(during):]
                finally:
                    worker.stop()
            online = await online_probe_vectors(redis_url, history.probes(), key_prefix=prefix)
        finally:
            await asyncio.to_thread(stack.down)
    broker_log = (home / "logs" / "kafka.log").read_text(errors="replace")
    print(f"broker exited {'never' if broker_exited_at is None else f'{broker_exited_at - filled_at:.1f}s'} after "
          f"the fill; restarted {restarted_at - freed_at:.1f}s after the filler was removed; stream moving again "
          f"{resumed_at - restarted_at:.1f}s after the restart; {out.scored_total - len(out.scored)} records scored "
          f"twice; kafka errors {backend_errors(metrics, 'kafka')}")
    print("worker log while the disk was full:\n" + "\n".join(line[:300] for line in during.splitlines()[:20]))
    print("worker log after:\n" + "\n".join(line[:300] for line in after.splitlines()[:20]))
    print("broker:\n" + "\n".join(line[:300] for line in broker_log.splitlines()
                                  if "No space left" in line or "log dirs" in line)[:3000])

    assert "No space left on device" in broker_log, "the broker never failed a write: the disk was not full"
    assert "KafkaStorageError" in during, during[-3000:]  # the worker says why its sends and fetches fail
    assert set(out.scored) == history.ids, "transactions lost: an offset was committed for a record not stored"
    assert not out.dead, out.dead_reasons()
    assert moved_while_full == 0, f"{moved_while_full} records scored while the broker's disk was full"
    diff, worst = max_rel_diff(online, offline_probe_vectors(history, history.probes()))
    assert diff <= 1e-6, f"the state differs from the offline engine on {worst}: {diff}"
