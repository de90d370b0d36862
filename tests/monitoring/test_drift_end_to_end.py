"""Drift on the real stack: a real worker scores simulated traffic and writes its feature sketches to
Redis, the drift monitor (hosted by the dashboard app, as ``fraudstream dashboard`` runs it) reads
``scored-transactions`` and those sketches, both with the bucket size of one setting; normal traffic
raises no alert, shifted traffic raises ``drift-alerts`` (score and features) and ``retrain-requests``
records. The page is then rendered by headless Chromium from the live state."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from config.kafka import assign_at_end, ensure_topics
from config.settings import Settings, Topics
from fraudstream.workers import WorkerProcess
from monitoring.dashboard import create_app, serve
from monitoring.drift import DriftConfig
from monitoring.service import DriftMonitor, MonitorOptions
from monitoring.windows import WindowSpec
from tests.fixtures.topics import produce, run_id
from tests.fixtures.traffic import Traffic, export_trained_model, records, simulate
from tests.fixtures.workers import launch, worker_env

pytestmark = pytest.mark.integration
TOPICS = Topics()
N_NORMAL, N_SHIFTED, N_LATER = 800, 800, 300
TOKEN = "drift-test-token"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
SETTINGS = Settings(drift_bucket_s=1.0)
"""The one setting both sides take their bucket size from: the worker through its environment, the
monitor through its configuration."""


@dataclass(frozen=True)
class Setup:
    model_dir: Path
    live: Traffic
    app_id: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    end = datetime.now(UTC)
    total = N_NORMAL + N_SHIFTED + N_LATER
    training = simulate(count=total, seed=11, end=end).features[:N_NORMAL]
    live = simulate(count=total, seed=12, end=end, shift_after=N_NORMAL, prefix=run_id("drift"))
    repo = tmp_path_factory.mktemp("drift-models")
    export_trained_model(repo, training)
    return Setup(repo / "fraud_dnn", live, run_id("drift-worker"))


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str, setup: Setup
           ) -> Iterator[WorkerProcess]:
    home = tmp_path_factory.mktemp("drift-worker-home")
    # Its own card-hash secret gives this worker card state of its own in the shared Redis.
    env = worker_env(home, kafka_bootstrap, redis_url, f"local://{setup.model_dir}", FRAUD_APP_ID=setup.app_id,
                     FRAUD_CARD_HASH_SECRET=run_id("secret"), FRAUD_DRIFT_BUCKET_S=str(SETTINGS.drift_bucket_s))
    process = launch(env, home / "worker.log")
    assert process.wait_ready(timeout_s=120), process.tail()
    yield process
    process.stop()


@pytest_asyncio.fixture(scope="module")
async def dashboard(setup: Setup, kafka_bootstrap: str, redis_url: str, worker: WorkerProcess
                    ) -> AsyncIterator[tuple[DriftMonitor, str]]:
    await ensure_topics(kafka_bootstrap, {name: 1 for name in (TOPICS.scored, TOPICS.dead_letter, TOPICS.labels,
                                                                TOPICS.drift_alerts, TOPICS.retrain_requests)})
    config = DriftConfig(windows=WindowSpec.parse_many("30s=30,10s=10"), bucket_s=SETTINGS.drift_bucket_s,
                         psi_threshold=0.2,
                         consecutive=3, min_samples=400, retrain=True)
    options = MonitorOptions(bootstrap=kafka_bootstrap, topics=TOPICS, model_dir=setup.model_dir, drift=config,
                             evaluate_every_s=0.5, lag_group=setup.app_id, lag_every_s=1.0)
    redis = aioredis.Redis.from_url(redis_url)
    monitor = DriftMonitor(options, redis=redis)
    runner, port = await serve(create_app(monitor, api_token=TOKEN), "127.0.0.1", 0)
    await asyncio.wait_for(monitor.ready.wait(), 60)
    yield monitor, f"http://127.0.0.1:{port}"
    await runner.cleanup()
    await redis.aclose()


class TopicTail:
    """Records appended to some topics after it was opened."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap, self.topics = bootstrap, topics
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.seen: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}

    async def __aenter__(self) -> TopicTail:
        await self.consumer.start()
        await assign_at_end(self.consumer, self.bootstrap, self.topics)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for tp, messages in (await self.consumer.getmany(timeout_ms=200)).items():
                self.seen[tp.topic].extend(orjson.loads(m.value) for m in messages)


async def _wait(predicate: Any, timeout_s: float, what: str, worker: WorkerProcess) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{worker.tail()}"
        await asyncio.sleep(0.2)


def _judged(monitor: DriftMonitor) -> set[tuple[str, str]]:
    return {(r.subject, r.window) for r in monitor.state.latest}


async def test_normal_traffic_raises_no_alert_and_shifted_traffic_does(
    dashboard: tuple[DriftMonitor, str], setup: Setup, worker: WorkerProcess, kafka_bootstrap: str,
    redis_url: str,
) -> None:
    monitor, _url = dashboard
    live = setup.live
    sketch = monitor.sketch
    assert sketch is not None
    async with TopicTail(kafka_bootstrap, [TOPICS.drift_alerts, TOPICS.retrain_requests]) as tail:
        started = monitor.state.totals["scored"]
        await produce(kafka_bootstrap, records(live.transactions[:N_NORMAL], TOPICS.transactions))
        await _wait(lambda: monitor.state.totals["scored"] - started >= N_NORMAL, 90, "normal scores", worker)
        # The feature histograms come from the worker itself: its sketch, written to Redis per micro-batch.
        await _wait(lambda: sketch.rows(60, time.time()) >= N_NORMAL, 30, "the worker's feature sketches", worker)
        # Several evaluations with full windows, for the score and for features, all below the threshold.
        first = monitor.state.evaluations
        await _wait(lambda: monitor.state.evaluations >= first + 6 and ("score", "30s") in _judged(monitor)
                    and ("amount", "30s") in _judged(monitor), 30, "normal evaluations", worker)
        seasonal = monitor.state.config.seasonal
        normal = {(r.subject, r.window): r.psi for r in monitor.state.latest if r.subject not in seasonal}
        await tail.poll(1.0)
        assert not tail.seen[TOPICS.drift_alerts] and not monitor.state.alerts, normal
        assert normal[("score", "30s")] < 0.1, normal
        assert max(normal.values()) < 0.2, normal

        t_shift = time.monotonic()
        await produce(kafka_bootstrap, records(live.transactions[N_NORMAL:N_NORMAL + N_SHIFTED],
                                               TOPICS.transactions))

        def alerted() -> bool:
            subjects = {a["subject"] for a in tail.seen[TOPICS.drift_alerts]}
            return {"score", "amount"} <= subjects and bool(tail.seen[TOPICS.retrain_requests])

        deadline = time.monotonic() + 60
        while not alerted() and time.monotonic() < deadline:
            await tail.poll(0.5)
        assert alerted(), (tail.seen, [(r.subject, r.window, r.psi) for r in monitor.state.latest], worker.tail())
    score_alert = next(a for a in tail.seen[TOPICS.drift_alerts] if a["subject"] == "score")
    assert score_alert["psi"] > 0.2 and score_alert["threshold"] == 0.2 and score_alert["model_version"] == 1
    assert score_alert["at"].endswith("Z") or "+00:00" in score_alert["at"]
    retrain = tail.seen[TOPICS.retrain_requests][0]
    assert retrain["requested_by"] == "drift-monitor" and "drift:" in retrain["reason"]
    print(f"\nshift → alerts in {time.monotonic() - t_shift:.1f}s; normal PSI score "
          f"{normal[('score', '30s')]:.3f}; alert PSI {score_alert['psi']:.3f}")


async def test_metrics_beside_the_dashboard_expose_drift_families(
    dashboard: tuple[DriftMonitor, str], setup: Setup
) -> None:
    _monitor, url = dashboard
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        text = await response.text()
    for needle in ('fraudstream_drift_psi{subject="score",window="30s"}', "fraudstream_drift_ks{",
                   "fraudstream_drift_alerts_total{", 'fraudstream_score_share{bin="0.00-0.05",source="reference"}',
                   'fraudstream_monitor_records_total{topic="scored-transactions"}',
                   f'fraudstream_consumer_group_lag{{group="{setup.app_id}",partition="0",topic="transactions"}}'):
        assert needle in text, needle


async def test_retrain_action_needs_the_token_and_a_valid_bounded_body(
    dashboard: tuple[DriftMonitor, str], kafka_bootstrap: str
) -> None:
    _monitor, url = dashboard
    good = {"Authorization": f"Bearer {TOKEN}"}
    async with TopicTail(kafka_bootstrap, [TOPICS.retrain_requests]) as tail, aiohttp.ClientSession() as s:
        cases = [
            ({}, {"reason": "x"}, 401),
            ({"Authorization": "Bearer wrong"}, {"reason": "x"}, 401),
            (good, {"reason": ""}, 422),
            (good, {"reason": "x", "extra": 1}, 422),
            (good, {"reason": "x" * 5000}, 413),
            (good, {"reason": "x", "requested_by": "a b"}, 422),
        ]
        for headers, body, status in cases:
            async with s.post(f"{url}/api/retrain", json=body, headers=headers) as response:
                assert response.status == status, (body, await response.text())
        async with s.post(f"{url}/api/retrain", data=b"reason=x", headers=good) as response:
            assert response.status == 415
        async with s.post(f"{url}/api/retrain", json={"reason": "analyst: new merchant mix", "requested_by": "ana"},
                          headers=good) as response:
            assert response.status == 202
            request_id = (await response.json())["request_id"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            r["request_id"] == request_id for r in tail.seen[TOPICS.retrain_requests]
        ):
            await tail.poll(0.5)
    [published] = [r for r in tail.seen[TOPICS.retrain_requests] if r["request_id"] == request_id]
    assert published["requested_by"] == "dashboard:ana" and published["reason"] == "analyst: new merchant mix"


async def test_dashboard_renders_live_data_in_headless_chromium(
    dashboard: tuple[DriftMonitor, str], setup: Setup, worker: WorkerProcess, kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    monitor, url = dashboard
    before, labels_before = monitor.state.totals["scored"], monitor.state.totals["labels"]
    later = setup.live.transactions[-N_LATER:]
    await produce(kafka_bootstrap, records(later, TOPICS.transactions) + fraud_labels(later[:100]))
    await _wait(lambda: monitor.state.totals["scored"] - before >= N_LATER
                and monitor.state.totals["labels"] - labels_before >= 100, 60, "fresh scores and labels", worker)
    ARTIFACTS.mkdir(exist_ok=True)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--window-size=1280,1000", "--virtual-time-budget=4000"]
    page = f"{url}/?poll=500"
    dom = await _run(*flags, f"--user-data-dir={tmp_path / 'dom'}", "--dump-dom", page)
    shot = ARTIFACTS / "dashboard.png"
    await _run(*flags, f"--user-data-dir={tmp_path / 'shot'}", f"--screenshot={shot}", page)
    assert shot.exists() and shot.stat().st_size > 10_000

    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:2000]
    updates = int(re.search(r'data-updates="(\d+)"', body.group(1)).group(1))  # type: ignore[union-attr]
    live_total = int(re.search(r'data-live-total="(\d+)"', body.group(1)).group(1))  # type: ignore[union-attr]
    bars = [int(c) for c in re.findall(r'<rect class="bar live"[^>]*data-count="(\d+)"', dom)]
    assert updates >= 2  # it keeps polling while open
    assert len(bars) == 20  # one bar per reference bin
    assert live_total >= N_LATER and sum(bars) == live_total  # drawn from the live window's counts
    assert live_total <= monitor.state.totals["scored"]
    assert re.search(rf'id="live-total">{live_total}<', dom)
    assert re.search(r'<polyline class="ref-line" points="[^"]+" data-bins="20"', dom)
    psi_points = re.findall(r'class="series psi-line" d="M[^"]+" stroke="[^"]+" data-subject="score" '
                            r'data-points="(\d+)"', dom)
    assert psi_points and int(psi_points[0]) >= 5
    assert re.search(r'class="series rate-line" d="M[^"]+', dom)
    assert re.search(r'<rect class="share"[^>]*data-version="1"', dom)
    assert re.search(r'data-alerts="[1-9]', body.group(1))
    assert re.search(r'id="fraud-rate">\d+\.\d\d% of \d+', dom)  # from the labels sent above
    # Self-contained: nothing is loaded from elsewhere (no external scripts, styles, images or fonts).
    assert not re.search(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//', dom) and "<link" not in dom
    assert "@import" not in dom and "url(" not in dom


def fraud_labels(txs: list[Any]) -> list[tuple[str, bytes, bytes]]:
    """Labels for these transactions, known now (analyst verdicts arriving while the page is open)."""
    now = datetime.now(UTC).isoformat()
    return [(TOPICS.labels, str(t.payload["card_id"]).encode(), orjson.dumps({
        "transaction_id": t.payload["transaction_id"], "card_id": t.payload["card_id"],
        "terminal_id": t.payload["terminal_id"], "event_time": t.payload["event_time"], "available_at": now,
        "is_fraud": t.is_fraud, "source": "analyst"})) for t in txs]


async def _run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=90)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, f"{argv[0]} exited with {process.returncode}"
    return out.decode(errors="replace")
