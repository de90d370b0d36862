"""A bad model version dropped into the repository mid-stream, with a real worker on the real stack.

The repository has no ``labels.json``: ``stable`` is the newest version, so every version that appears is
picked up by the worker's hot reload at its next poll (scoring/repository.py) — the path where a version
pushed by mistake would go live without anyone promoting it. One after another, while transactions
stream, a version appears that outputs NaN, one trained on another feature list, one whose warm-up fails
and one that cannot load; then a good one.

Promises (docs/reliability.md): each bad version is refused (ERROR in the log, counted on ``/metrics`` as
``fraudstream_model_rejected_total{reason}``), version 1 keeps scoring — no record degraded, none lost,
none dead-lettered, every offset committed — and the good version after them is served as usual.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from features import FEATURE_LIST
from fraudstream.stack.process import free_port
from fraudstream.workers import WorkerProcess
from scoring.testing.model_factory import export_model
from tests.chaos.proxied import scored_at, scrape
from tests.fixtures.history import History
from tests.fixtures.models import BAD_KINDS, BadKind, export_bad_version
from tests.fixtures.topics import Collector, private_topics, produce, wait_caught_up
from tests.fixtures.workers import launch, wait_ready, worker_env

pytestmark = [pytest.mark.chaos, pytest.mark.integration]
MODEL = "fraud_dnn"
CARDS, PER_CARD, RATE = 60, 40, 60.0  # 2,400 transactions over ~40 s: every drop sees traffic
START_AFTER_SCORED = 200
GOOD_VERSION = 2 + len(BAD_KINDS)


def rejected(metrics: dict[str, float], version: int, reason: str) -> float:
    key = f'fraudstream_model_rejected_total{{model="{MODEL}",reason="{reason}",version="{version}"}}'
    return metrics.get(key, 0.0)


async def wait_metric(port: int, worker: WorkerProcess, version: int, reason: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if rejected(scrape(port), version, reason) >= 1:
            return
        assert worker.alive(), worker.tail(40)
        await asyncio.sleep(0.5)
    raise AssertionError(f"v{version} ({reason}) not counted as refused in {timeout_s:.0f}s:\n{worker.tail(30)}")


async def test_bad_versions_dropped_mid_stream_are_refused_and_v1_keeps_scoring(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    run, topics = await private_topics(kafka_bootstrap, "badmodel")
    history = History.build(run, cards=CARDS, per_card=PER_CARD, seed=7, label_share=0.0)
    repo, staging = tmp_path / "models", tmp_path / "staging"
    export_model(repo, model_name=MODEL, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    # Built before the stream starts and published by one rename each, as the exporter publishes a version.
    drops: list[tuple[int, BadKind | None]] = [(2 + i, kind) for i, kind in enumerate(BAD_KINDS)]
    for version, kind in drops:
        assert kind is not None
        export_bad_version(staging / MODEL, kind, version)
    export_model(staging, model_name=MODEL, version=GOOD_VERSION, feature_names=FEATURE_LIST.names,
                 feature_hash=FEATURE_LIST.hash)
    drops.append((GOOD_VERSION, None))

    port = free_port()
    env = worker_env(tmp_path, kafka_bootstrap, redis_url, f"local://{repo / MODEL}", topics, run,
                     FRAUD_METRICS_PORT=str(port))
    async with Collector(kafka_bootstrap, topics) as collector:
        worker = launch(env, tmp_path / "worker.log")
        try:
            await wait_ready(worker)
            producing = asyncio.create_task(produce(kafka_bootstrap, history.records(topics), rate=RATE))
            await collector.wait(lambda o: len(o.scored) >= START_AFTER_SCORED, 120, "scores before the drops",
                                 worker=worker)
            first_drop = time.time()
            for version, kind in drops:
                dropped_at = time.time()
                (staging / MODEL / str(version)).rename(repo / MODEL / str(version))
                if kind is not None:
                    await wait_metric(port, worker, version, kind)
            good_at = dropped_at
            await collector.wait(lambda o: any(r["model_version"] == GOOD_VERSION for r in o.scored.values()), 60,
                                 f"scores from v{GOOD_VERSION}", worker=worker)
            await producing
            out = await collector.wait(lambda o: history.ids <= o.scored.keys(), 120, "every transaction",
                                       worker=worker)
            await wait_caught_up(kafka_bootstrap, run, topics.transactions, timeout_s=60)
            metrics = scrape(port)
            assert worker.alive(), worker.tail(40)
        finally:
            worker.stop()

    assert set(out.scored) == history.ids, "transactions lost"
    assert not out.dead, out.dead_reasons()
    records = list(out.scored.values())
    assert not [r for r in records if r["degraded"]], "a refused version must not degrade any score"
    assert {r["model_version"] for r in records} == {1, GOOD_VERSION}
    during = [r for r in records if first_drop <= scored_at(r) < good_at]
    assert len(during) >= 100 and {r["model_version"] for r in during} == {1}, \
        "v1 keeps scoring while bad versions are the newest"
    for version, kind in drops:
        if kind is not None:
            assert rejected(metrics, version, kind) == 1, {k: v for k, v in metrics.items() if "rejected" in k}
    log = worker.output()
    for version, kind in drops:
        if kind is not None:
            line = next((ln for ln in log.splitlines() if f"v{version} refused for label 'stable' ({kind})" in ln), "")
            assert "ERROR" in line and "v1 keeps serving it" in line, (line, worker.tail(40))
    print(f"{len(records)} scored; {len(during)} by v1 while the bad versions were the newest; "
          f"refused: {[k for _, k in drops if k]}")
