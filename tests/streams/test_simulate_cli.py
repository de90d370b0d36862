"""``fraudstream simulate`` warms the online features with the population's past before its traffic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from features import FEATURE_LIST
from features.online import state_tag
from tests.fixtures.topics import run_id

pytestmark = pytest.mark.integration


def test_simulate_warms_the_features_of_its_own_population(tmp_path: Path, kafka_bootstrap: str,
                                                            redis_url: str) -> None:
    prefix = run_id("simcli")
    env = {**os.environ, "FRAUD_HOME": str(tmp_path), "FRAUD_KAFKA_BOOTSTRAP": kafka_bootstrap,
           "FRAUD_REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", "simulate", "--count", "300", "--cards", "100", "--terminals", "200",
         "--warm-up-days", "5", "--id-prefix", prefix],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # 100 cards spend ~200 transactions a day: 5 days of history come first, applied to Redis, not sent.
    assert "warming the online features with 5 days" in result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["transactions"] == 300
    client = redis.Redis.from_url(redis_url)
    try:
        # The population's ids are this run's own (<id-prefix>-<run>-card-…): its past lands on no other state.
        keys = list(client.scan_iter(match=f"fs:{state_tag(FEATURE_LIST)}:{{t:{prefix}-*", count=1000))
    finally:
        client.close()
    assert len(keys) > 100, keys[:5]
