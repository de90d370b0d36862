"""``fraudstream demo``: its summary (a table, the JSON contract), and the command on its own stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from features import FEATURE_LIST
from fraudstream.demo_report import DemoReport, PhaseReport, summary_json, summary_lines
from scoring.testing.model_factory import export_model, write_labels


def _report() -> DemoReport:
    backlog = PhaseReport("backlog", produced=5000, scored=4975, first_sent=100.0, last_outcome=102.5)
    backlog.finish([900.0, 1500.0, 2200.0])
    steady = PhaseReport("steady", offered_rate_tps=1000.0, produced=15000, scored=14925, first_sent=103.0,
                         last_outcome=118.1)
    steady.finish([10.0, 12.0, 30.0, 80.0])
    report = DemoReport(produced=20000, scored=19900, dead_lettered=100, elapsed_s=95.0, phases=[backlog, steady],
                        frauds=400, dlq_reasons={"decode:json": 100})
    report.decisions = {"approve": {"fraud": 60, "genuine": 19300}, "review": {"fraud": 90, "genuine": 150},
                        "decline": {"fraud": 250, "genuine": 50}}
    return report


def test_summary_is_a_table_with_the_fraud_share_next_to_the_decisions() -> None:
    report = _report()
    text = "\n".join(summary_lines(report))
    assert "{'" not in text and "{\"" not in text  # a table, not Python dicts
    assert "produced = scored + dead-lettered  yes" in text
    assert "fraud in the traffic  2.0% (400 of 19,900 scored" in text
    assert "  decline              300    1.5%      250        50" in text
    assert "frauds declined 62.5%, sent to review 22.5%; genuine transactions declined 0.3%" in text
    backlog, steady = (line for line in text.splitlines() if line.startswith(("  backlog", "  steady")))
    assert "at once" in backlog and "(a backlog: queueing)" in backlog
    assert "1,000 tx/s" in steady and "21 / 72 / 78 / 80 ms" in steady and "queueing" not in steady  # kept up


def test_summary_json_keeps_the_contract_and_says_whether_the_worker_kept_up() -> None:
    report = _report()
    data = summary_json(report)
    assert (data["produced"], data["scored"], data["dead_lettered"], data["elapsed_s"]) == (20000, 19900, 100, 95.0)
    assert data["complete"] is True and data["fraud_share"] == pytest.approx(400 / 19900)
    assert [p["name"] for p in data["phases"]] == ["backlog", "steady"]
    assert data["offered_rate_tps"] == 1000.0 and data["kept_up"] is True
    assert data["latency_ms"] == data["phases"][1]["latency_ms"] and data["latency_ms"]["p50"] == 21.0
    json.dumps(data)  # serialisable as it is written
    slow = PhaseReport("steady", offered_rate_tps=1000.0, produced=15000, scored=15000, first_sent=0.0,
                       last_outcome=30.0)
    slow.finish([5000.0])
    assert slow.kept_up is False  # 500 tx/s scored of 1,000 offered: latencies are queueing, and it says so


@pytest.mark.integration
def test_demo_command_on_its_own_stack(tmp_path: Path) -> None:
    """The command as ``make demo`` runs it, in a home of its own: it starts (and stops) its own stack and
    worker. A model is already there (the first-model path is exercised by the drift test of the demo's
    model), and a short warm-up keeps this quick."""
    home = tmp_path / ".fraudstream"
    export_model(home / "models", feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    write_labels(home / "models" / "fraud_dnn", {"stable": 1})
    summary = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")} | {"FRAUD_HOME": str(home),
                                                                                 "FRAUD_METRICS_PORT": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", "demo", "--transactions", "3000", "--warm-up-days", "2",
         "--summary-json", str(summary)],
        env=env, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    data = json.loads(summary.read_text())
    assert data["produced"] == data["scored"] + data["dead_lettered"] and data["scored"] > 0
    assert data["dead_lettered"] > 0 and data["warm_up"]["transactions"] > 1000
    assert [p["name"] for p in data["phases"]] == ["backlog", "steady"]
    assert data["phases"][1]["offered_rate_tps"] > 0 and data["latency_ms"]["p50"] > 0
    assert "produced = scored + dead-lettered  yes" in result.stdout
    assert "Traceback" not in result.stderr and "tensorflow" not in result.stderr.lower()
    status = subprocess.run([sys.executable, "-m", "fraudstream", "stack", "status"], env=env, capture_output=True,
                            text=True, timeout=60, check=False, cwd=tmp_path)
    lines = status.stdout.splitlines()
    assert len(lines) == 2 and all(line.split()[1] == "stopped" for line in lines), status.stdout  # stopped again
