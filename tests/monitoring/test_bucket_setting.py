"""The workers' feature sketches and the drift monitor use one bucket size: ``Settings.drift_bucket_s``.

The bucket size is part of the sketch's Redis keys, so a worker and a monitor that disagreed would write
and read different keys and the monitor would see no feature at all (as the end-to-end test once did,
with 10 s buckets written and 1 s buckets read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from config.settings import load_settings
from fraudstream.cli import build_parser, main
from fraudstream.cli.monitoring import _build_monitor
from monitoring.sketch import bucket_key
from monitoring.worker import WorkerMonitoring
from tests.fixtures.drift import write_reference

NAMES = ("amount", "card_count_1d")


@pytest.mark.parametrize("bucket", ["10", "2.5"])
async def test_worker_and_monitor_take_their_bucket_size_from_the_setting(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    write_reference(tmp_path / "models" / "fraud_dnn", 1, features={n: rng.lognormal(2, 1, 500) for n in NAMES})
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUD_DRIFT_BUCKET_S", bucket)
    settings = load_settings()
    redis = aioredis.Redis.from_url("redis://127.0.0.1:1")  # never connected: only the objects are compared
    worker = WorkerMonitoring.start(settings, redis=redis, feature_names=NAMES, port=-1)
    monitor = _build_monitor(settings, build_parser().parse_args(["monitor"]))
    assert worker.sketch is not None and monitor.sketch is not None
    assert worker.sketch.bucket_s == monitor.sketch.bucket_s == monitor.state.config.bucket_s == float(bucket)
    # The same key for the same moment on both sides.
    now = 1_800_000_123.4
    index = int(now // float(bucket))
    assert bucket_key(worker.sketch.namespace, "fraud_dnn", 1, worker.sketch.bucket_s, index) == \
        bucket_key(monitor.sketch.namespace, "fraud_dnn", 1, monitor.sketch.bucket_s, index)
    await redis.aclose()


def test_the_monitor_refuses_a_bucket_size_the_workers_do_not_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    monkeypatch.setenv("FRAUD_DRIFT_BUCKET_S", "10")
    assert main(["monitor", "--bucket-s", "1"]) == 2
    err = capsys.readouterr().err
    assert "--bucket-s 1 differs from FRAUD_DRIFT_BUCKET_S=10" in err and "Traceback" not in err
