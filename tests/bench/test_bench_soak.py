"""``fraudstream bench soak``: its verdict (a slope over the run's second half against a bound) tells a growing
series from a flat one, and a short real run (its own stack, a real worker) reports every series per sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fraudstream.bench.soak import Bound, bounds, slope_per_min, verdict, verdicts

ROOT = Path(__file__).resolve().parents[2]
MINUTES = [float(m) for m in range(1, 31)]
BOUND = Bound(1.0, "MB/min", "test")


def test_a_flat_noisy_series_passes_and_a_growing_one_fails() -> None:
    noise = np.random.default_rng(3).normal(0, 2.0, len(MINUTES))  # ±2 MB of allocator noise per sample
    flat = [800.0 + n for n in noise]
    leaking = [800.0 + 2.0 * m + n for m, n in zip(MINUTES, noise, strict=True)]  # 2 MB/min

    assert verdict(MINUTES, flat, BOUND)["ok"] is True
    grows = verdict(MINUTES, leaking, BOUND)
    assert grows["ok"] is False
    assert grows["slope_per_min"] == pytest.approx(2.0, abs=0.5)


def test_only_the_second_half_is_judged() -> None:
    # a warm-up that fills what is bounded by design (id records up to their horizon), then a plateau
    plateau = [min(m, 10.0) * 20.0 for m in MINUTES]
    judged = verdict(MINUTES, plateau, BOUND)

    assert judged["ok"] is True
    assert judged["from_minute"] == 16.0
    assert judged["slope_per_min"] == pytest.approx(0.0)
    assert slope_per_min(MINUTES, plateau) > 1.0  # over the whole run it would have failed


def test_too_few_samples_give_no_verdict_rather_than_a_pass() -> None:
    assert verdict([0.2, 0.3, 0.5], [800.0, 900.0, 1000.0], BOUND)["ok"] is None
    assert verdict([], [], BOUND)["ok"] is None


def test_every_series_is_judged_and_lag_is_bounded_by_the_offered_load() -> None:
    samples = [{"minute": m, "worker_rss_mb": 800.0, "redis_used_memory_mb": 50.0, "lag_transactions": 100 + 900 * m,
                "lag_labels": 50, "p99_ms": 40.0} for m in MINUTES]

    judged = verdicts(samples, offered_tps=1_000.0)

    assert set(judged) == set(bounds(1_000.0))
    assert bounds(1_000.0)["lag_transactions"].per_min == 500.0
    assert judged["lag_transactions"]["ok"] is False  # 900 records more every minute: not keeping up
    assert all(judged[name]["ok"] is True for name in judged if name != "lag_transactions")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.chaos  # a stack of its own and a 30 s run (~2.5 min in all): with the long-run tests of `make test-chaos`
def test_a_short_soak_on_its_own_stack_reports_each_sample_and_loses_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "fraudstream", "bench", "soak", "--minutes", "0.5", "--interval-s", "10",
         "--rate", "200", "--json", "--home", str(tmp_path / "soak")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert len(result["samples"]) == 3
    assert [s["minute"] for s in result["samples"]] == sorted(s["minute"] for s in result["samples"])
    for s in result["samples"]:
        assert s["worker_rss_mb"] > 100  # a real worker with TensorFlow in it
        assert s["redis_used_memory_mb"] > 0
        assert s["lag_transactions"] >= 0 and s["lag_labels"] >= 0
        assert s["p99_ms"] >= s["p50_ms"] > 0
    assert result["sent"]["transactions"] == pytest.approx(200 * 30, rel=0.1)
    assert result["scored"] == result["sent"]["transactions"]
    assert result["dead_letters"] == result["sent"]["invalid"]
    assert result["unscored"] == 0
    assert sum(s["scored"] for s in result["samples"]) <= result["scored"]
    assert set(result["verdicts"]) == set(bounds(200.0))
    assert all(v["ok"] is None for v in result["verdicts"].values())  # 3 samples: too short to judge
    assert "[bench soak]" in proc.stderr
    assert not (tmp_path / "soak" / "kafka" / "data").exists()  # the soak's data is removed after
