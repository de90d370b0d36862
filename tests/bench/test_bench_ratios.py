"""Issue #20's same-run ceilings on the real stack: the echo worker (``FRAUD_PIPELINE_MODE=echo``) publishes
every transaction without touching Redis's id or feature state, the Kafka round trip reads back every
record it sent, and the ratios and targets computed from the phases are consistent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from config.kafka import delete_topics, ensure_topics
from config.settings import load_settings
from fraudstream.bench.e2e import Phase, kafka_rtt, saturation
from fraudstream.bench.ratios import SHARES, ratio_figures, targets
from fraudstream.stack.redis import purge_prefix


def _phase(name: str) -> Phase:
    run = f"{name}-{uuid.uuid4().hex[:6]}"
    return Phase(name=run, transactions=f"{run}-tx", scored=f"{run}-scored", dead_letter=f"{run}-dlq",
                 key_prefix=f"test-{run}")


@pytest.mark.integration
@pytest.mark.slow
async def test_the_echo_worker_publishes_every_transaction_and_leaves_no_state_in_redis(
    stack_home: Path, kafka_bootstrap: str, redis_url: str, local_backend: str
) -> None:
    settings = load_settings(home=stack_home, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url)
    phase = _phase("echo")
    await ensure_topics(kafka_bootstrap, {phase.transactions: 2, phase.scored: 2, phase.dead_letter: 1})
    try:
        echo = await saturation(settings, phase, local_backend, count=1500, mode="echo", batch=256, seed=3,
                                log_dir=stack_home / "logs" / "test-echo")
        client = redis.Redis.from_url(redis_url)
        try:
            id_keys = list(client.scan_iter(match=f"{phase.key_prefix}:id:*", count=1000))
        finally:
            client.close()
    finally:
        await delete_topics(kafka_bootstrap, [phase.transactions, phase.scored, phase.dead_letter])
        purge_prefix(redis_url, phase.key_prefix)

    assert (echo["scored"], echo["dead_lettered"], echo["lost"]) == (1500, 0, 0)
    assert echo["throughput_tps"] > 0
    assert id_keys == [], "the echo path claimed transaction ids in Redis"


@pytest.mark.integration
async def test_the_kafka_round_trip_reads_back_every_record_it_sent(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, kafka_bootstrap=kafka_bootstrap)
    phase = _phase("rtt")
    await ensure_topics(kafka_bootstrap, {phase.transactions: 2})
    try:
        rtt = await kafka_rtt(settings, phase, rate=400, seconds=1.0, seed=5)
    finally:
        await delete_topics(kafka_bootstrap, [phase.transactions])

    assert (rtt["transactions"], rtt["received"], rtt["lost"]) == (400, 400, 0)
    assert 0 < rtt["p50_ms"] <= rtt["p99_ms"] <= rtt["p999_ms"]


def _latency(rate: float, p50: float, p99: float) -> dict[str, float]:
    return {"offered_tps": rate, "delivered_tps": rate, "p50_ms": p50, "p99_ms": p99, "p999_ms": p99 * 1.5, "lost": 0}


def test_the_ratios_are_to_the_ceilings_and_shares_of_the_same_run() -> None:
    capacity = 8_000.0
    batched = {"throughput_tps": capacity,
               "cpu": {"worker_cpu_us_per_tx": 120.0, "redis_cpu_us_per_tx": 90.0, "kafka_cpu_us_per_tx": 30.0,
                       "bench_cpu_us_per_tx": 9.0}}
    shares = {share: _latency(share * capacity, 5.0 + 40 * share, 20.0 + 100 * share) for share in SHARES}
    reference = {"before": {"redis_trivial_call_cpu_us": 1.4}, "after": {"redis_trivial_call_cpu_us": 1.6}}

    figures = ratio_figures(batched, {"throughput_tps": 10_000.0}, {"p50_ms": 3.0, "p99_ms": 14.0}, shares, reference)

    assert figures["echo_tps"] == 10_000.0 and figures["throughput_vs_echo"] == 0.8
    rows = figures["latency_at_share"]
    assert [r["share"] for r in rows] == [0.1, 0.25, 0.5]
    assert [r["offered_tps"] for r in rows] == [800.0, 2_000.0, 4_000.0]
    assert figures["p99_vs_kafka_rtt"] == round(70.0 / 14.0, 3)
    assert figures["p50_ms_at_10pct"] == 9.0
    units = figures["cpu_units_per_tx"]
    assert units == {"worker": 80.0, "redis": 60.0, "kafka": 20.0, "total": 160.0}  # the bench is not a component

    held = targets({**figures, "p99_ms": 70.0, "speedup_vs_naive": 16.0})
    assert held == {"throughput_vs_echo >= 0.5": True, "p99_ms at 50% <= 50": False,
                    "p99_vs_kafka_rtt at 50% <= 5": True, "p50_ms at 10% <= 10": True,
                    "speedup_vs_naive >= 15": True}
    assert targets({})["speedup_vs_naive >= 15"] is None
