"""Fault 3: the model server is slow, then down, then back (the in-process TF Serving servicer).

Promises: slow answers slow the stream down (backpressure: the batch waits, consumer lag grows) without
degrading anything; an outage first pauses the stream for the grace period (retries), then the worker
publishes rules-only scores flagged ``degraded: true`` (no model version); when the server is back the
first successful call ends the outage and scores are model scores again. Nothing is lost throughout.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from fraudstream.stack import LocalStack
from tests.fixtures.history import History
from tests.fixtures.models import serving
from tests.fixtures.topics import Collected, Collector, private_topics, produce
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
CARDS, PER_CARD = 200, 30
GRACE_S = 3.0
DEADLINE_S = 0.5
RATE = 150.0  # transactions per second: a live stream, so every phase sees traffic
SLOW_S, SLOW_LATENCY_S = 6.0, 0.25  # this long, every model call takes this long (within the deadline)
DEGRADED_BEFORE_HEAL = 200  # the model server is down until this many degraded records were published


def _scored_at(record: dict[str, object]) -> float:
    return datetime.fromisoformat(str(record["scored_at"]).replace("Z", "+00:00")).timestamp()


def _count(out: Collected, since: float, until: float = float("inf"), *, degraded: bool) -> int:
    return sum(1 for r in out.scored.values() if since <= _scored_at(r) < until and r["degraded"] is degraded)


async def test_slow_then_down_model_server_degrades_then_recovers_losing_nothing(
    local_stack: LocalStack, kafka_bootstrap: str, redis_url: str, model_repo: Path, tmp_path: Path
) -> None:
    run, topics = await private_topics(kafka_bootstrap, "model")
    history = History.build(run, cards=CARDS, per_card=PER_CARD, seed=4, label_share=0.0)

    async with serving(model_repo / "fraud_dnn") as server, Collector(kafka_bootstrap, topics) as collector:
        backend = f"tfserving://{server.target}/fraud_dnn?label=stable"
        env = worker_env(tmp_path, kafka_bootstrap, redis_url, backend, topics, run,
                         FRAUD_MODEL_OUTAGE_GRACE_S=str(GRACE_S), FRAUD_MODEL_DEADLINE_S=str(DEADLINE_S))
        worker = launch(env, tmp_path / "worker.log")
        try:
            await wait_ready(worker)
            producing = asyncio.create_task(produce(kafka_bootstrap, history.records(topics), rate=RATE))
            await collector.wait(lambda o: len(o.scored) >= 300, 60, "300 model scores")

            # Slow: every call takes longer (within the deadline), so batches wait for the model.
            slow_from = time.time()
            server.latency_s = SLOW_LATENCY_S
            await asyncio.sleep(SLOW_S)
            slow_until = time.time()
            server.latency_s = 0.0

            # Down: UNAVAILABLE on every call until healed.
            down_from = time.time()
            server.fail_with(grpc.StatusCode.UNAVAILABLE)
            await collector.wait(lambda o: _count(o, down_from, degraded=True) >= DEGRADED_BEFORE_HEAL, 60,
                                 "degraded scores")
            server.heal()
            healed_at = time.time()
            await collector.wait(lambda o: _count(o, healed_at, degraded=False) >= 300, 60, "model scores again")
            await producing
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 120, "every transaction")
            assert worker.alive(), worker.tail(60)
        finally:
            worker.stop()

    assert set(out.scored) == history.ids and not out.dead
    assert _count(out, slow_from, slow_until, degraded=True) == 0, "slow answers must not degrade scores"
    assert _count(out, slow_from, slow_until, degraded=False) > 0
    assert _count(out, 0, down_from, degraded=True) == 0
    degraded = [r for r in out.scored.values() if r["degraded"]]
    assert all(r["model_version"] is None and r["reason_codes"] == [] for r in degraded)
    assert all(down_from + GRACE_S * 0.9 <= _scored_at(r) <= healed_at + 5 for r in degraded), \
        "degraded scores appear only after the grace period and stop soon after recovery"
    assert _count(out, healed_at + 5, degraded=True) == 0
    log = worker.log.read_text(errors="replace")
    assert "rules-only scoring" in log and "recovered" in log, worker.tail(40)
    print(f"{len(out.scored)} scored, {len(degraded)} degraded between the outage and the recovery")
