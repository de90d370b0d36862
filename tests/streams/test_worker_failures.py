"""How the worker stops when it cannot go on, on the real stack.

- A model built for other features: the worker refuses to start with one line on stderr, exit 1, and never
  joins the consumer group (it would hold partitions without scoring them).
- An unexpected error in a batch (Redis refuses the feature functions to the worker's ACL user: a
  non-retryable error): the worker stops itself with exit 70, acks nothing of that batch, and a restarted
  worker scores every transaction exactly once (nothing lost, nothing published twice).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from config.kafka import ensure_topics
from config.settings import Topics
from features import FEATURE_LIST
from fraudstream.workers import READY_MARKER
from fraudstream.workers import worker_env as fraud_worker_env
from scoring.testing.model_factory import export_model
from tests.fixtures.topics import OutputReader, produce
from tests.fixtures.topics import run_id as unique

pytestmark = pytest.mark.integration
TRANSACTIONS = 300


def run_topics(run: str) -> Topics:
    return Topics(**{k: f"{run}.{v}" for k, v in Topics().model_dump().items()})


def env_for(home: Path, bootstrap: str, redis_url: str, model_dir: Path, topics: Topics, run: str,
            **extra: str) -> dict[str, str]:
    return {
        **os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
        **fraud_worker_env(home=home, bootstrap=bootstrap, redis_url=redis_url, model_backend=f"local://{model_dir}",
                           topics=topics, FRAUD_APP_ID=run, FRAUD_CARD_HASH_SECRET=unique("secret"),
                           FRAUD_METRICS_PORT="-1", FRAUD_BATCH_MAX_SIZE="64", FRAUD_KAFKA_SESSION_TIMEOUT_S="10",
                           **extra),
    }


def run_worker(env: dict[str, str], timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fraudstream", "worker"], env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)


def transaction(run: str, i: int) -> bytes:
    at = datetime(2026, 4, 1, tzinfo=UTC) + timedelta(seconds=30 * i)
    return json.dumps({
        "transaction_id": f"{run}-{i}", "card_id": f"card-{i % 17}", "terminal_id": f"term-{i % 5}",
        "amount": 12.5 + i, "currency": "EUR", "event_time": at.isoformat().replace("+00:00", "Z"),
    }).encode()


def test_a_model_for_other_features_stops_the_start_in_one_line(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    export_model(tmp_path / "models", feature_names=FEATURE_LIST.names, feature_hash="0" * 64)
    run = unique("badmodel")
    env = env_for(tmp_path / "home", kafka_bootstrap, redis_url, tmp_path / "models" / "fraud_dnn",
                  run_topics(run), run)
    result = run_worker(env)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the worker cannot start: FeatureHashMismatch: "), result.stderr[-3000:]
    assert READY_MARKER not in result.stderr
    assert "Joined group" not in result.stderr, "a worker that cannot score joined the consumer group"


async def test_an_unexpected_error_stops_the_worker_without_acking(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str
) -> None:
    repo = tmp_path / "models"
    export_model(repo, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    run = unique("unexpected")
    topics = run_topics(run)
    await ensure_topics(kafka_bootstrap, {name: 3 if name == topics.transactions else 1
                                          for name in topics.model_dump().values()})
    user, password = f"{run}-user", unique("pw")
    admin = aioredis.Redis.from_url(redis_url)
    # Everything but calling functions: the worker starts (it loads them), and its first batch fails with
    # NOPERM, which no retry cures.
    await admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-fcall",
                                "-fcall_ro")
    try:
        async with OutputReader(kafka_bootstrap, topics) as reader:
            await produce(kafka_bootstrap, [(topics.transactions, f"card-{i % 17}".encode(), transaction(run, i))
                                            for i in range(TRANSACTIONS)])
            refused = env_for(tmp_path / "home", kafka_bootstrap, redis_url, repo / "fraud_dnn", topics, run,
                              FRAUD_REDIS_USERNAME=user, FRAUD_REDIS_PASSWORD=password)
            failed = await asyncio.to_thread(run_worker, refused)
            assert failed.returncode == 70, failed.stderr[-3000:]
            assert READY_MARKER in failed.stderr
            assert "stopping the worker without acking the batch: " in failed.stderr, failed.stderr[-3000:]
            assert "NOPERM" in failed.stderr
            assert "worker stopped cleanly" not in failed.stderr
            assert "never retrieved" not in failed.stderr, failed.stderr[-3000:]
            published = await reader.read_until(lambda o: False, timeout_s=3)
            assert published.scored_count == 0, "a batch was published although its transaction ids were not"

            good = env_for(tmp_path / "home", kafka_bootstrap, redis_url, repo / "fraud_dnn", topics, run)
            proc = subprocess.Popen([sys.executable, "-m", "fraudstream", "worker"], env=good,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    stdin=subprocess.DEVNULL)
            try:
                out = await reader.read_until(lambda o: len(o.scored) >= TRANSACTIONS, timeout_s=180)
                await reader.read_until(lambda o: False, timeout_s=3)  # anything published twice
            finally:
                proc.terminate()
                _, stderr = await asyncio.to_thread(proc.communicate, timeout=90)
            assert proc.returncode == 0, stderr[-3000:]
    finally:
        await admin.execute_command("ACL", "DELUSER", user)
        await admin.aclose()
    assert set(out.scored) == {f"{run}-{i}" for i in range(TRANSACTIONS)}, "a transaction was lost"
    assert out.scored_count == TRANSACTIONS, "a transaction was published twice"
