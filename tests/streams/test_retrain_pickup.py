"""`fraudstream retrain` → promotion gate → `fraudstream models promote` → the running worker scores with the
new version, without a restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config.settings import Topics
from features import FEATURE_LIST
from fraudstream.workers import WorkerProcess
from scoring.testing.model_factory import export_model, write_labels
from tests.fixtures.topics import OutputReader, produce, run_id
from tests.fixtures.workers import launch, worker_env

pytestmark = pytest.mark.integration
TOPICS = Topics()
HISTORY = "sim:30000?seed=4&cards=500&terminals=1000"
"""30 days of a simulated population: the retrain job's default fold (train, 7-day gap, test week) fits."""


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("retrain-home")
    export_model(home / "models", feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    write_labels(home / "models" / "fraud_dnn", {"stable": 1})
    return home


@pytest.fixture(scope="module")
def worker(home: Path, kafka_bootstrap: str, redis_url: str) -> Iterator[WorkerProcess]:
    env = worker_env(home, kafka_bootstrap, redis_url, f"local://{home / 'models' / 'fraud_dnn'}",
                     FRAUD_APP_ID=run_id("retrain"))
    process = launch(env, home / "worker.log")
    assert process.wait_ready(timeout_s=120), process.tail()
    yield process
    process.stop()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FRAUD_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "fraudstream", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


async def score_some(kafka_bootstrap: str, run: str, count: int = 20) -> set[int]:
    when = datetime.now(UTC) - timedelta(hours=1)
    records = [
        (TOPICS.transactions, b"card-rt", json.dumps({
            "transaction_id": f"{run}-{i}", "card_id": "card-rt", "terminal_id": "term-rt", "amount": 30.0 + i,
            "currency": "EUR", "event_time": (when + timedelta(seconds=i)).isoformat(),
        }).encode())
        for i in range(count)
    ]
    async with OutputReader(kafka_bootstrap, TOPICS) as reader:
        await produce(kafka_bootstrap, records)
        out = await reader.read_until(lambda o: sum(k.startswith(run) for k in o.scored) >= count, timeout_s=90)
    return {int(r["model_version"]) for k, r in out.scored.items() if k.startswith(run)}


async def test_retrained_version_is_picked_up_through_the_promotion_path(
    home: Path, worker: WorkerProcess, kafka_bootstrap: str
) -> None:
    assert await score_some(kafka_bootstrap, run_id("before")) == {1}

    retrain = cli(home, "retrain", "--input", HISTORY, "--quick", "--days", "5", "--threads", "2", "--json")
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    status = json.loads(retrain.stdout.strip().splitlines()[-1])["status"]
    assert status["state"] == "succeeded", status
    assert status["model_version"] == 2 and status["promoted_to"] == "canary", status
    assert json.loads((home / "models" / "fraud_dnn" / "labels.json").read_text()) == {"stable": 1, "canary": 2}
    # A canary takes no traffic at the default canary share of 0: still version 1.
    assert await score_some(kafka_bootstrap, run_id("canary")) == {1}

    promote = cli(home, "models", "promote")
    assert promote.returncode == 0, promote.stderr[-2000:]
    assert json.loads((home / "models" / "fraud_dnn" / "labels.json").read_text())["stable"] == 2
    versions: set[int] = set()
    deadline = time.monotonic() + 60  # the local backend polls the repository every 2 s
    while time.monotonic() < deadline:
        versions = await score_some(kafka_bootstrap, run_id("after"), count=5)
        if versions == {2}:
            break
        await asyncio.sleep(1.0)
    assert versions == {2}, worker.tail()
    assert worker.alive()
