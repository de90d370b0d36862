"""The worker's lifecycle on the real stack: SIGTERM mid-stream stops it cleanly (exit 0, its batches drained
and acked, the drift sketch flushed, every client closed), and a restarted worker scores the rest: nothing
lost, nothing scored twice.

The drift sketch flushes to Redis every 2 s while batches arrive; counts of the last batches before the
stop reach Redis only through the flush at shutdown, so the sketch's row total equals the number of
transactions scored exactly when that flush ran.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from config.kafka import ensure_topics
from config.settings import Topics
from features import FEATURE_LIST
from fraudstream.workers import READY_MARKER
from fraudstream.workers import worker_env as fraud_worker_env
from monitoring.sketch import KEY_PREFIX, ROWS_FIELD
from scoring.testing.model_factory import export_model
from tests.fixtures.topics import OutputReader, Outputs, produce
from tests.fixtures.topics import run_id as unique

pytestmark = pytest.mark.integration

CLEAN_STOP = "worker stopped cleanly"
TRANSACTIONS, BAD = 3000, 5
STOP_AFTER_SCORED = 500
BUCKET_S = 7.25
"""A drift bucket size no other test uses: the sketch keys (which carry it) are this test's own."""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model version whose metadata carries a drift reference for one feature, so the worker's sketch is on
    (it bins only features the reference describes)."""
    repo = tmp_path_factory.mktemp("lifecycle-models")
    version = export_model(repo, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    metadata = version / "assets.extra" / "fraudstream_metadata.json"
    info = json.loads(metadata.read_text())
    info["reference"] = {"features": {FEATURE_LIST.names[0]: {"edges": ["-inf", 1.0, "inf"], "counts": [1, 1]}}}
    metadata.write_text(json.dumps(info))
    return version.parent


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for(self, text: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.02)
        return False


def launch(env: dict[str, str], log: Path) -> Worker:
    with log.open("ab") as out:
        # ResourceWarnings ("unclosed ...", "Unclosed AIOKafka...") are shown, not ignored as by default.
        proc = subprocess.Popen([sys.executable, "-W", "always::ResourceWarning", "-m", "fraudstream", "worker"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    return Worker(proc, log)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:  # a failed test leaves no worker behind
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait(timeout=30)


def tcp_peers(pid: int) -> set[tuple[str, int]]:
    """(local address, remote port) of every established TCP connection the process holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes:  # ESTABLISHED
                local_port = int(local.rsplit(":", 1)[1], 16)
                peers.add((f"127.0.0.1:{local_port}", int(remote.rsplit(":", 1)[1], 16)))
    return peers


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1].split("/", 1)[0])


async def redis_client_addresses(client: aioredis.Redis) -> set[str]:
    return {str(c["addr"]) for c in await client.client_list()}


async def sketch_rows(client: aioredis.Redis) -> int:
    total = 0
    async for key in client.scan_iter(match=f"{KEY_PREFIX}:*:fraud_dnn:1:{BUCKET_S:g}:*"):
        total += int(await client.hget(key, ROWS_FIELD) or 0)
    return total


def transaction(run: str, i: int) -> bytes:
    at = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=20 * i)
    return json.dumps({
        "transaction_id": f"{run}-{i}", "card_id": f"card-{i % 97}", "terminal_id": f"term-{i % 13}",
        "amount": 5.0 + i % 300, "currency": "EUR", "event_time": at.isoformat().replace("+00:00", "Z"),
    }).encode()


async def produce_paced(bootstrap: str, records: list[tuple[str, bytes | None, bytes]], per_s: float) -> None:
    step = 100
    for start in range(0, len(records), step):
        await produce(bootstrap, records[start:start + step])
        await asyncio.sleep(step / per_s)


async def stop_and_check(worker: Worker, bootstrap: str, redis: aioredis.Redis) -> None:
    """SIGTERM; at the clean-stop line (the last thing the runtime does; faust's own teardown takes a second
    more) the process holds no connection to Redis or Kafka and Redis lists none of its connections."""
    redis_port, kafka_port = int(redis.connection_pool.connection_kwargs["port"]), port_of(bootstrap)
    during = tcp_peers(worker.proc.pid)
    ours = {local for local, remote in during if remote == redis_port}
    assert ours, f"the worker had no Redis connection to watch: {during}"
    assert ours & await redis_client_addresses(redis), "Redis does not list the worker's connections"
    assert any(remote == kafka_port for _, remote in during), during

    os.kill(worker.proc.pid, signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait_for, CLEAN_STOP, 90), worker.tail()
    alive_at_stop = worker.proc.poll() is None
    left = tcp_peers(worker.proc.pid) if alive_at_stop else set()
    assert alive_at_stop, "the worker exited before its sockets could be checked"
    assert not [p for p in left if p[1] in (redis_port, kafka_port)], f"left open at the clean stop: {left}"
    deadline = time.monotonic() + 2.0
    while (listed := ours & await redis_client_addresses(redis)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not listed, f"Redis still lists the worker's connections: {listed}"
    assert await asyncio.to_thread(worker.proc.wait, 60) == 0, worker.tail()


def assert_clean_log(worker: Worker) -> None:
    output = worker.output()
    for needle in ("Traceback", "nclosed", "ResourceWarning", "Task was destroyed", "never retrieved"):
        assert needle not in output, f"{needle!r} in the worker's output:\n{worker.tail(80)}"


async def settled(reader: OutputReader, quiet_s: float = 3.0) -> Outputs:
    """Everything published so far: read until nothing new arrives for ``quiet_s``."""
    count = -1
    while count != reader.outputs.scored_count + len(reader.outputs.dead):
        count = reader.outputs.scored_count + len(reader.outputs.dead)
        await reader.read_until(lambda _: False, timeout_s=quiet_s)
    return reader.outputs


async def test_sigterm_mid_stream_stops_cleanly_and_a_restart_loses_nothing(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, model_dir: Path, workers: list[Worker]
) -> None:
    run = unique("lifecycle")
    topics = Topics(**{k: f"{run}.{v}" for k, v in Topics().model_dump().items()})
    await ensure_topics(kafka_bootstrap, {name: 3 if name == topics.transactions else 1
                                          for name in topics.model_dump().values()})
    env = {
        **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
        **fraud_worker_env(home=tmp_path, bootstrap=kafka_bootstrap, redis_url=redis_url,
                           model_backend=f"local://{model_dir}", topics=topics, FRAUD_APP_ID=run,
                           FRAUD_CARD_HASH_SECRET=unique("secret"), FRAUD_METRICS_PORT="0",
                           FRAUD_DRIFT_BUCKET_S=f"{BUCKET_S:g}", FRAUD_BATCH_MAX_SIZE="64",
                           FRAUD_KAFKA_SESSION_TIMEOUT_S="10"),
    }
    good = [(topics.transactions, f"card-{i % 97}".encode(), transaction(run, i)) for i in range(TRANSACTIONS)]
    bad = [(topics.transactions, b"bad", f'{{"transaction_id": "{run}-bad-{i}", "amount": -1}}'.encode())
           for i in range(BAD)]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        async for key in redis.scan_iter(match=f"{KEY_PREFIX}:*:{BUCKET_S:g}:*"):
            await redis.delete(key)
        async with OutputReader(kafka_bootstrap, topics) as reader:
            first = launch(env, tmp_path / "worker-1.log")
            workers.append(first)
            assert await asyncio.to_thread(first.wait_for, READY_MARKER, 180), first.tail()
            traffic = asyncio.create_task(produce_paced(kafka_bootstrap, good[:1500] + bad + good[1500:], 1500))
            await reader.read_until(lambda o: o.scored_count >= STOP_AFTER_SCORED, timeout_s=120)
            assert reader.outputs.scored_count >= STOP_AFTER_SCORED, first.tail()
            await stop_and_check(first, kafka_bootstrap, redis)
            assert_clean_log(first)
            await traffic
            at_stop = await settled(reader)
            scored_first = at_stop.scored_count
            assert scored_first < TRANSACTIONS, "the worker finished before the stop: offer more traffic"
            assert scored_first == len(at_stop.scored), "a transaction was scored twice before the restart"
            assert await sketch_rows(redis) == scored_first, "the drift sketch missed the last batches"

            second = launch(env, tmp_path / "worker-2.log")
            workers.append(second)
            assert await asyncio.to_thread(second.wait_for, READY_MARKER, 180), second.tail()
            out = await reader.read_until(
                lambda o: len(o.scored) >= TRANSACTIONS and len(o.dead) >= BAD, timeout_s=180)
            await stop_and_check(second, kafka_bootstrap, redis)
            assert_clean_log(second)
            out = await settled(reader)
            rows = await sketch_rows(redis)
    finally:
        await redis.aclose()

    produced = {f"{run}-{i}" for i in range(TRANSACTIONS)}
    assert set(out.scored) == produced, f"{len(produced - set(out.scored))} transactions lost"
    assert out.scored_count == TRANSACTIONS, f"{out.scored_count - TRANSACTIONS} scored twice"
    assert sorted(d["reason"] for d in out.dead) == ["validation:card_id:missing"] * BAD
    assert rows == TRANSACTIONS, "the drift sketch missed the last batches of the restarted worker"
