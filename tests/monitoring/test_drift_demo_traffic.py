"""The demo's model on the demo's traffic: normal traffic raises no drift alert, a shift does.

All real: the model the demo trains (``fraudstream.demo.train_first_model``: ``fraudstream train`` on the
simulator's history of the population, ``sim:300000``, in its own process), a worker process, the online
features warmed with the population's last 38 days (as the demo and ``fraudstream simulate`` do),
20,000 normal transactions of one simulated stream, and the drift monitor as ``fraudstream monitor``
builds it (default windows, threshold, consecutive evaluations and minimum samples; the bucket size of
the one setting the worker uses too), reading the scores from Kafka and the worker's feature sketches
from Redis. Then the rest of the same stream, shifted (``shift_after``): alerts within seconds.

Topics are private to this module (the worker and the monitor see nothing of the other tests' traffic).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import pytest_asyncio

from config.kafka import ensure_topics
from config.settings import Settings, Topics, load_settings
from features.simulator import Simulator, interleave_labels
from fraudstream.cli import build_parser
from fraudstream.cli.monitoring import _build_monitor
from fraudstream.demo import POPULATION, train_first_model
from fraudstream.sources.producer import OutboundRecord, first_transactions, produce
from fraudstream.sources.warmup import take_history, warm_up, with_warm_up
from fraudstream.workers import WorkerProcess
from monitoring.reference import SCORE
from monitoring.service import DriftMonitor
from tests.fixtures.topics import run_id
from tests.fixtures.workers import launch, worker_env

pytestmark = pytest.mark.integration
N_NORMAL, N_SHIFTED = 20_000, 10_000
ALERT_WITHIN_S = 60.0


@dataclass
class DemoSetup:
    settings: Settings
    model: dict[str, object]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str) -> DemoSetup:
    home = tmp_path_factory.mktemp("demo-drift-home")
    run = run_id("demo-drift")
    topics = Topics(transactions=f"{run}-tx", scored=f"{run}-scored", dead_letter=f"{run}-dlq",
                    labels=f"{run}-labels", drift_alerts=f"{run}-alerts", retrain_requests=f"{run}-retrain")
    settings = load_settings(home=home, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topics=topics,
                             app_id=run, card_hash_secret=run_id("secret"))
    model = train_first_model(settings, home / "logs" / "train-first-model.log", progress=print)
    asyncio.run(ensure_topics(kafka_bootstrap, {topics.transactions: 4, topics.scored: 1, topics.dead_letter: 1,
                                                topics.labels: 1, topics.drift_alerts: 1,
                                                topics.retrain_requests: 1}))
    return DemoSetup(settings, model)


@pytest.fixture(scope="module")
def worker(demo: DemoSetup) -> Iterator[WorkerProcess]:
    s = demo.settings
    env = worker_env(s.home, s.kafka_bootstrap, s.redis_url, s.effective_model_backend, s.topics, s.app_id,
                     FRAUD_CARD_HASH_SECRET=s.card_hash_secret.get_secret_value())
    process = launch(env, s.home / "logs" / "worker.log")
    assert process.wait_ready(180), process.tail()
    yield process
    process.stop()


@pytest_asyncio.fixture(scope="module")
async def monitor(demo: DemoSetup, worker: WorkerProcess) -> AsyncIterator[DriftMonitor]:
    monitor = _build_monitor(demo.settings, build_parser().parse_args(["monitor", "--evaluate-every", "2"]))
    await monitor.start()
    await asyncio.wait_for(monitor.ready.wait(), 60)
    yield monitor
    await monitor.stop()


async def _wait(predicate: object, timeout_s: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert worker.alive(), worker.tail()
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{worker.tail()}"
        await asyncio.sleep(0.5)


async def test_normal_demo_traffic_raises_no_alert_and_a_shift_does(
    demo: DemoSetup, worker: WorkerProcess, monitor: DriftMonitor
) -> None:
    settings = demo.settings
    assert monitor.sketch is not None and monitor.state.config.bucket_s == settings.drift_bucket_s
    run = run_id("traffic")
    config, warm = with_warm_up(replace(POPULATION, count=N_NORMAL + N_SHIFTED, shift_after=N_NORMAL, id_prefix=run,
                                        entity_prefix=f"{run}-"))
    stream = interleave_labels(Simulator(config), end=time.time())
    warmed = await warm_up(settings, *take_history(stream, warm))
    assert warmed.transactions == warm and warmed.days > 37
    t = settings.topics
    topics = {"tx": t.transactions, "bad": t.transactions, "label": t.labels}
    records = (OutboundRecord(topics[k], key, value, counts_as_transaction=k != "label") for k, key, value in stream)

    normal = await produce(settings.kafka_bootstrap, first_transactions(records, N_NORMAL), quiet=True)
    assert normal.transactions == N_NORMAL
    await _wait(lambda: monitor.state.totals["scored"] >= N_NORMAL, 300, "the normal traffic's scores", worker)
    await _wait(lambda: monitor.sketch.rows(300, time.time()) >= N_NORMAL, 60,  # type: ignore[union-attr]
                "the worker's feature sketches of the normal traffic", worker)
    evaluated = monitor.state.evaluations
    # More evaluations over the complete normal traffic than an alert needs in a row.
    await _wait(lambda: monitor.state.evaluations >= evaluated + monitor.state.config.consecutive + 1, 60,
                "evaluations over the normal traffic", worker)
    judged = {(r.subject, r.window): r for r in monitor.state.latest}
    reference = monitor.catalog.stable_version() if monitor.catalog else None
    assert reference == 1
    features = set(monitor.catalog.get(1).features) if monitor.catalog and monitor.catalog.get(1) else set()
    assert len(features) > 40  # the trainer's reference covers (nearly) every feature
    for subject in (SCORE, *features):
        r = judged[(subject, "5m")]
        assert r.samples >= 0.95 * N_NORMAL, r  # judged on the whole normal traffic, score and every feature
    worst = sorted({(round(r.psi, 4), r.subject) for r in monitor.state.latest}, reverse=True)[:5]
    assert not monitor.state.alerts, ([a.model_dump() for a in monitor.state.alerts], worst)
    print(f"\nnormal: {N_NORMAL:,} transactions after {warmed.transactions:,} warm-up transactions "
          f"({warmed.seconds:.0f} s); score PSI {judged[(SCORE, '5m')].psi:.4f}; highest PSI {worst}")

    shifted_at = time.monotonic()
    await produce(settings.kafka_bootstrap, records, quiet=True)

    def alerted() -> set[str]:
        return {a.subject for a in monitor.state.alerts}

    trace: list[tuple[float, int, float, tuple[float, str]]] = []

    def due() -> bool:
        latest = [r for r in monitor.state.latest if r.window == "5m"]
        score = next((r.psi for r in latest if r.subject == SCORE), 0.0)
        feature = max(((round(r.psi, 3), r.subject) for r in latest if r.subject in features), default=(0.0, ""))
        point = (round(time.monotonic() - shifted_at, 1), monitor.state.totals["scored"] - N_NORMAL,
                 round(score, 3), feature)
        if not trace or trace[-1][1:] != point[1:]:
            trace.append(point)
        return SCORE in alerted() and bool(alerted() & features)

    try:
        await _wait(due, ALERT_WITHIN_S, "drift alerts on the score and a feature", worker)
    finally:
        print("seconds after the shift, shifted transactions scored, score PSI, highest feature PSI (5m):", trace)
    delay = time.monotonic() - shifted_at
    print(f"shift: alerts {delay:.1f} s after the shifted traffic started, on {sorted(alerted())}")
    score_alert = next(a for a in monitor.state.alerts if a.subject == SCORE)
    assert score_alert.psi > score_alert.threshold == 0.2 and score_alert.model_version == 1


def test_the_demo_model_was_trained_on_the_population_it_scores(demo: DemoSetup) -> None:
    model = demo.model
    assert model["version"] == 1
    assert str(model["history"]).startswith("sim:300000?seed=0&events=1&cards=2000&terminals=4000")
    metrics = model["metrics"]
    assert isinstance(metrics, dict) and metrics["auc_roc"] > 0.75, metrics
    log = Path(demo.settings.home) / "logs" / "train-first-model.log"
    assert '"version": 1' in log.read_text()  # the trainer's JSON went to the log, not the console
