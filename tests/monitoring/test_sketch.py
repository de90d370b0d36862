"""The worker's feature sketch on the real Redis: key layout, additivity across workers, the reader."""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import numpy as np
import redis.asyncio as aioredis

from config.settings import Settings
from monitoring.reference import ReferenceCatalog
from monitoring.sketch import DEFAULT_NAMESPACE, FeatureSketchReader, bucket_key
from monitoring.worker import WorkerMonitoring
from streams.pipeline import BatchOutcome
from tests.fixtures.drift import write_reference


def test_key_layout_is_pinned() -> None:
    assert bucket_key("fs-a", "fraud_dnn", 3, 10.0, 180_000_000) == "fraudstream:drift:fs-a:fraud_dnn:3:10:180000000"
    assert bucket_key("fs-a", "fraud_dnn", 3, 0.5, 7) == "fraudstream:drift:fs-a:fraud_dnn:3:0.5:7"


async def test_two_workers_add_up_and_the_monitor_reads_the_windows(tmp_path: Path, redis_url: str) -> None:
    name = f"sketch_{uuid.uuid4().hex[:8]}"  # its own keys in the session's shared Redis
    rng = np.random.default_rng(0)
    training = {"amount": rng.lognormal(3, 1, 5000), "card_count_1d": rng.poisson(2, 5000).astype(float)}
    write_reference(tmp_path / "models" / name, 1, features=training)
    settings = Settings(home=tmp_path, redis_url=redis_url, model_name=name)
    redis = aioredis.Redis.from_url(redis_url)
    names = ("amount", "tx_hour", "card_count_1d")  # tx_hour has no reference: skipped, not an error
    workers = [WorkerMonitoring.start(settings, redis=redis, feature_names=names, port=-1) for _ in range(2)]
    batch = np.column_stack([rng.lognormal(3, 1, 300), rng.integers(0, 24, 300), rng.poisson(2, 300)])
    for worker in workers:
        assert worker.sketch is not None
        await worker.after_batch(BatchOutcome(consumed=300, scored=300), features=batch,
                                 models={(name, 1, "stable"): 300}, degraded=0, publish_s=0.001)
        await worker.close()
    now = time.time()
    # Both workers wrote into the same bucket (or two, if a 10 s boundary fell between the flushes).
    keys = sorted([k.decode() async for k in redis.scan_iter(match=f"fraudstream:drift:*:{name}:*")])
    assert keys and all(k.startswith(f"fraudstream:drift:{DEFAULT_NAMESPACE}:{name}:1:10:") for k in keys)
    assert {bucket_key(DEFAULT_NAMESPACE, name, 1, 10.0, math.floor(now / 10.0) - i) for i in range(2)} >= set(keys)
    stored = [await redis.hgetall(k) for k in keys]
    assert sum(int(h[b"_n"]) for h in stored) == 600
    ttls = [await redis.ttl(k) for k in keys]
    assert all(0 < ttl <= 2 * 86_400 for ttl in ttls)
    assert not any("tx_hour|" in str(f) for h in stored for f in h)

    reference = ReferenceCatalog(tmp_path / "models" / name).get(1)
    assert reference is not None
    reader = FeatureSketchReader(redis, bucket_s=10.0, horizon_s=600)
    await reader.refresh(reference, now)
    assert reader.rows(60, now) == 600
    # Another deployment (app id) on the same Redis and model name reads none of these rows.
    other = FeatureSketchReader(redis, bucket_s=10.0, namespace="another-deployment", horizon_s=600)
    await other.refresh(reference, now)
    assert other.rows(60, now) == 0
    amount = reader.series()["amount"].window(60, now)
    assert amount.sum() == 600 and amount.size == reference.features["amount"].counts.size
    assert workers[0].metrics.registry.get_sample_value("fraudstream_transactions_scored_total") == 300
    await redis.aclose()
