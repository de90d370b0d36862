"""``fraudstream dashboard`` and ``fraudstream monitor`` as processes against the session's stack."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _start(args: list[str], home: Path, bootstrap: str, redis_url: str) -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, FRAUD_HOME=str(home), FRAUD_KAFKA_BOOTSTRAP=bootstrap, FRAUD_REDIS_URL=redis_url,
               FRAUD_API_TOKEN="cli-token")
    process = subprocess.Popen([sys.executable, "-m", "fraudstream", *args], env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if found:
            return process, int(found.group(1))
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError("".join(seen))


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def _stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()


def test_dashboard_command_serves_page_state_and_metrics(tmp_path: Path, kafka_bootstrap: str,
                                                         redis_url: str) -> None:
    process, port = _start(["dashboard", "--port", "0", "--windows", "1m=60", "--evaluate-every", "0.5"],
                           tmp_path, kafka_bootstrap, redis_url)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:  # /healthz answers 503 until the monitor has its partitions
            try:
                status, _ = _get(f"{base}/healthz")
                break
            except urllib.error.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.3)
        assert status == 200
        status, page = _get(base + "/")
        assert status == 200 and '<svg class="chart" id="score-chart"' in page
        status, state = _get(base + "/api/state")
        assert status == 200 and '"windows":["1m"]' in state.replace(" ", "")
        status, metrics = _get(base + "/metrics")
        assert "# TYPE fraudstream_drift_psi gauge" in metrics
    finally:
        assert _stop(process) == 0


def test_monitor_command_exposes_metrics(tmp_path: Path, kafka_bootstrap: str, redis_url: str) -> None:
    process, port = _start(["monitor", "--metrics-port", "0", "--windows", "1m=60"], tmp_path, kafka_bootstrap,
                           redis_url)
    try:
        time.sleep(0.5)
        status, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "# TYPE fraudstream_drift_alerts_total counter" in metrics
    finally:
        assert _stop(process) == 0
