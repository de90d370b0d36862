"""The dashboard as a risk analyst sees it: ``fraudstream dashboard`` (the real command) on the session's
stack, a real worker scoring ``fraudstream simulate`` traffic (normal, then shifted, with malformed records
and labels), then the traffic stops. Headless Chromium (Debian's, driven by Playwright) renders the page at
1280×800 and 1920×1080; the test reads the rendered DOM and layout, and keeps the screenshots in
``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from config.kafka import ensure_topics
from config.settings import Topics
from fraudstream.workers import WorkerProcess
from tests.fixtures.topics import run_id
from tests.fixtures.traffic import export_trained_model, simulate
from tests.fixtures.workers import launch, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
WINDOW_S, BUCKET_S = 120, 10.0
NORMAL, SHIFTED, RATE = 1600, 600, 30.0
TIME_LABEL = re.compile(r"^\d\d:\d\d(:\d\d)?$")


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    redis_url: str
    topics: Topics
    model_dir: Path
    home: Path
    app_id: str
    """The deployment's: its worker's consumer group, whose lag and feature sketches the dashboard reads."""

    def env(self, **extra: str) -> dict[str, str]:
        topics = {f"FRAUD_TOPICS__{k.upper()}": v for k, v in self.topics.model_dump().items()}
        return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "FRAUD_HOME": str(self.home), "FRAUD_APP_ID": self.app_id,
                "FRAUD_KAFKA_BOOTSTRAP": self.bootstrap, "FRAUD_REDIS_URL": self.redis_url, **topics, **extra}


@pytest.fixture(scope="module")
def dash_stack(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, redis_url: str) -> Stack:
    end = datetime.now(UTC)
    # The same simulator and volume as the normal live traffic below: the reference describes it.
    training = simulate(count=NORMAL, seed=21, end=end, prefix=run_id("dash-train")).features
    repo = tmp_path_factory.mktemp("dashboard-models")
    export_trained_model(repo, training, seed=3, review_share=0.03)
    run = run_id("dash")
    topics = Topics(transactions=f"{run}-tx", scored=f"{run}-scored", dead_letter=f"{run}-dlq",
                    labels=f"{run}-labels", retrain_requests=f"{run}-retrain", retrain_status=f"{run}-status",
                    drift_alerts=f"{run}-alerts")
    keyed = {topics.transactions, topics.scored, topics.labels}
    asyncio.run(ensure_topics(kafka_bootstrap, {t: 2 if t in keyed else 1 for t in topics.model_dump().values()}))
    return Stack(kafka_bootstrap, redis_url, topics, repo / "fraud_dnn", tmp_path_factory.mktemp("dash-home"),
                 app_id=run_id("dash-worker"))


@pytest.fixture(scope="module")
def worker(dash_stack: Stack) -> Iterator[WorkerProcess]:
    env = worker_env(dash_stack.home, dash_stack.bootstrap, dash_stack.redis_url, f"local://{dash_stack.model_dir}",
                     FRAUD_APP_ID=dash_stack.app_id, FRAUD_CARD_HASH_SECRET=run_id("secret"),
                     **{f"FRAUD_TOPICS__{k.upper()}": v for k, v in dash_stack.topics.model_dump().items()})
    process = launch(env, dash_stack.home / "worker.log")
    assert process.wait_ready(timeout_s=180), process.tail()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def dashboard(dash_stack: Stack, worker: WorkerProcess) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "fraudstream", "dashboard", "--port", "0", "--windows", f"2m={WINDOW_S},10m=600",
         "--bucket-s", str(BUCKET_S), "--evaluate-every", "1", "--min-samples", "100",
         "--model-dir", str(dash_stack.model_dir)],
        env=dash_stack.env(), text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert process.stderr is not None
    url, seen = None, []
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        url = found.group(0) if found else None
        if not line and process.poll() is not None:
            break
    assert url, "".join(seen)
    try:
        _wait(lambda: _get(url + "healthz").get("ok") is True, 60, "the monitor's partitions")
        yield url
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result
    except urllib.error.HTTPError:
        return {}


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _simulate(dash_stack: Stack, *args: str) -> None:
    # No warm-up: the test model was trained on this population's features from cold state.
    command = [sys.executable, "-m", "fraudstream", "simulate", "--rate", str(RATE), "--warm-up-days", "0", *args]
    result = subprocess.run(command,
                            env=dash_stack.env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def traffic(dash_stack: Stack, dashboard: str, worker: WorkerProcess) -> dict[str, Any]:
    """Normal traffic, then shifted traffic, then silence: the state the screenshots show."""
    run = run_id("d")
    _simulate(dash_stack, "--count", str(NORMAL), "--seed", "31", "--invalid-share", "0.01", "--id-prefix", f"{run}a")
    # Labels of the shifted part arrive at once (analyst verdicts while the page is open); the normal part's
    # keep the simulator's 7-day delay, as the model's training history had no labels either.
    _simulate(dash_stack, "--count", str(SHIFTED), "--seed", "32", "--invalid-share", "0.01", "--shift-after", "0",
              "--label-delay-hours", "0", "--id-prefix", f"{run}b")
    api = dashboard + "api/state"
    _wait(lambda: _get(api)["totals"]["scored"] >= NORMAL + SHIFTED, 180, f"scores\n{worker.tail()}")
    _wait(lambda: _get(api)["stream"]["status"] == "stopped", 60, "the stream to read as stopped")
    _wait(lambda: any(p != "score" for p in _get(api)["psi_history"]), 60, "feature drift from the worker's sketch")
    return _get(api)


@pytest.mark.skipif(BROWSER is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
@pytest.mark.parametrize("width,height", [(1280, 800), (1920, 1080)])
def test_dashboard_reads_well_in_chromium(dashboard: str, traffic: dict[str, Any], width: int, height: int,
                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=BROWSER, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(dashboard) else None)
            page.goto(dashboard + "?poll=500")
            # (polled from here: the page's Content-Security-Policy forbids evaluating strings in it)
            _wait(lambda: page.evaluate("() => Number(document.body.dataset.updates)") >= 2, 30, "two updates")
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}x{height}.png"))
            page.screenshot(path=str(ARTIFACTS / f"dashboard-{width}x{height}-full.png"), full_page=True)
            view = page.evaluate(INSPECT)
        finally:
            browser.close()
    state = _get(dashboard + "api/state")
    timeline = state["timeline"]

    assert not outside, outside  # nothing from the internet, nor from anywhere else
    # A stopped stream says so, and its rate chart ends at zero rather than its last rate.
    assert view["body"]["stream"] == "stopped" and "stopped" in view["stream_text"], view["stream_text"]
    charts = view["charts"]
    scored = charts["scored-chart"]
    assert scored["points"] == WINDOW_S / BUCKET_S and scored["max"] > 0 and scored["last"] == 0, scored
    # Every time series has a time axis with clock labels and a value axis.
    time_charts = {k: c for k, c in charts.items() if c["kind"] == "time"}
    assert {"scored-chart", "dlq-chart", "latency-chart", "score-psi-chart", "psi-chart"} <= set(time_charts)
    for name, chart in time_charts.items():
        assert chart["x_ticks"] >= 3 and all(TIME_LABEL.match(t) for t in chart["x_labels"]), (name, chart)
        assert chart["y_ticks"] >= 2, (name, chart)
        assert chart["width"] >= 200, (name, chart)  # laid out, not squeezed
    # Isolated dead letters are bars of their own, one per non-empty bucket of the state the page drew.
    drawn = view["timeline"]
    assert sum(drawn["dead_letters"]) > 0
    assert charts["dlq-chart"]["bar_counts"] == [c for c in drawn["dead_letters"] if c > 0]
    assert drawn["times"][1] - drawn["times"][0] == BUCKET_S and len(drawn["times"]) == len(timeline["times"])
    # The decision mix over time: one chart per decision the policy emitted, with data.
    decisions = view["decisions"]
    assert set(decisions) == set(drawn["decisions"]) and {"approve", "review"} <= set(decisions), decisions
    assert all(d["points"] == WINDOW_S / BUCKET_S and d["x_ticks"] >= 2 for d in decisions.values()), decisions
    assert decisions["approve"]["max"] > 0
    # Score PSI on its own chart; features on a log scale, several lines with points.
    assert charts["score-psi-chart"]["lines"].get("score", 0) >= 5, charts["score-psi-chart"]
    assert len(charts["psi-chart"]["lines"]) >= 1 and min(charts["psi-chart"]["lines"].values()) >= 1
    # Tables fit their panels, the page does not scroll sideways, legend swatches stay beside their names.
    assert view["page_overflow"] <= 0, view["page_overflow"]
    assert view["tables"] and all(t["scroll"] <= t["client"] + 1 for t in view["tables"]), view["tables"]
    assert view["legend_items"] >= 8 and not view["wrapped_legends"], view["wrapped_legends"]
    assert view["drift_rows"] >= 2 and view["body"]["alerts"] >= 1  # the shifted traffic raised alerts
    assert (ARTIFACTS / f"dashboard-{width}x{height}.png").stat().st_size > 30_000


INSPECT = """() => {
  const num = v => (v === undefined || v === "" ? null : Number(v));
  const chart = svg => {
    const x = svg.querySelector(".x-axis"), y = svg.querySelector(".y-axis");
    const lines = {};
    svg.querySelectorAll("path.psi-line").forEach(p => { lines[p.dataset.subject] = Number(p.dataset.points); });
    return {kind: svg.dataset.kind || "other", points: num(svg.dataset.points), max: num(svg.dataset.max),
            last: num(svg.dataset.last), width: svg.getBoundingClientRect().width,
            x_ticks: x ? Number(x.dataset.ticks) : 0, y_ticks: y ? Number(y.dataset.ticks) : 0,
            x_labels: x ? [...x.querySelectorAll("text.tick")].map(t => t.textContent) : [],
            bar_counts: [...svg.querySelectorAll("rect.bar.dlq")].map(r => Number(r.dataset.count)), lines: lines};
  };
  const charts = {};
  document.querySelectorAll("svg.chart[id]").forEach(svg => { charts[svg.id] = chart(svg); });
  const decisions = {};
  document.querySelectorAll("svg.decision-chart").forEach(svg => { decisions[svg.dataset.decision] = chart(svg); });
  const legends = [...document.querySelectorAll(".legend > span")];
  return {
    body: {stream: document.body.dataset.stream, alerts: Number(document.body.dataset.alerts)},
    stream_text: document.getElementById("stream").textContent,
    charts: charts, decisions: decisions,
    page_overflow: document.documentElement.scrollWidth - window.innerWidth,
    tables: [...document.querySelectorAll(".table-wrap")].map(w => ({scroll: w.scrollWidth, client: w.clientWidth})),
    legend_items: legends.length,
    wrapped_legends: legends.filter(s => s.getBoundingClientRect().height > 24).map(s => s.textContent),
    drift_rows: document.querySelectorAll("#drift-table tr").length,
    timeline: lastState.timeline,  // the state this rendering was drawn from
  };
}"""
