"""Training history from the project's simulator (``sim:`` inputs): the default of ``fraudstream train``
when no ``--input`` is given, so a bare clone trains without any file beside it."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from features.simulator import SimulationConfig, Simulator
from fraudstream.cli import build_parser, main
from training.dataset import latest_fold_starts, load_history
from training.errors import DatasetError
from training.simulated import DEFAULT_HISTORY, is_simulated_source, load_simulated, parse_spec

END = datetime(2026, 3, 1, tzinfo=UTC)


def test_spec_options_and_mistakes() -> None:
    history = parse_spec("sim:5000?seed=3&events=4&cards=100&terminals=300&label_delay_days=2")
    c = history.config
    assert (c.count, c.seed, c.events_seed, c.cards, c.terminals, c.label_delay_s) == (5000, 3, 4, 100, 300, 172800)
    assert parse_spec("sim:10").config.events_seed == 1  # history: the population's other days, not live traffic
    assert parse_spec(history.spec).config == c  # the spec it prints is one it reads
    for bad, says in (("sim:", "sim:COUNT"), ("sim:-5", "sim:COUNT"), ("sim:10?color=red", "unknown option"),
                      ("sim:10?seed=x", "not a number"), ("sim:10?cards=2", "at least 10 cards")):
        with pytest.raises(DatasetError, match=says):
            parse_spec(bad)
    assert is_simulated_source(Path("sim:300000?seed=1")) and not is_simulated_source(Path("data/sim.parquet"))
    assert DEFAULT_HISTORY == "sim:300000"


def test_simulated_history_has_delayed_labels_and_the_live_population() -> None:
    transactions, labels = load_simulated("sim:20000?cards=300&terminals=600", end=END)
    assert len(transactions) == len(labels) == 20_000
    assert list(transactions.columns) == ["transaction_id", "card_ref", "terminal_id", "event_time", "amount",
                                          "latitude", "longitude"]
    assert transactions["transaction_id"].is_unique
    # Labels become known 7 days after the transaction, as in the live stream (never before).
    delay = labels["available_at"].to_numpy() - labels["event_time"].to_numpy()
    np.testing.assert_allclose(delay, 7 * 86_400.0)
    fraud_share = labels["is_fraud"].mean()
    assert 0.003 < fraud_share < 0.2, fraud_share
    assert transactions["event_time"].max() <= END.timestamp() + 1e-6
    # The history's customers are the live traffic's (same seed, other events seed): the same homes and
    # habits, so a card shops at the same terminals in both.
    live = Simulator(SimulationConfig(count=5000, cards=300, terminals=600, end=END))
    live_pairs = {(str(t.payload["card_id"]), str(t.payload["terminal_id"])) for t in live.transactions()}
    history_pairs = set(zip(transactions["card_ref"], transactions["terminal_id"], strict=True))
    ordinary = [p for p in live_pairs if p[0] != "card-000000"]
    assert sum(p in history_pairs for p in ordinary) / len(ordinary) > 0.8
    other_times = set(load_simulated("sim:2000?cards=300&terminals=600&events=2", end=END)[0]["event_time"])
    assert not other_times & set(transactions["event_time"])  # another events seed: other events


def test_default_folds_of_a_simulated_history() -> None:
    transactions, _labels = load_history(Path("sim:20000?cards=200&terminals=400"), "fdh")  # 50 days
    day = np.floor(transactions["event_time"].to_numpy() / 86_400).astype(np.int64)
    starts = latest_fold_starts(day)
    assert len(starts) == 4 and all((b - a).days == 7 for a, b in itertools.pairwise(starts))
    with pytest.raises(DatasetError, match="too short"):
        latest_fold_starts(day[day < day.min() + 10])


def test_train_defaults_to_the_simulator_and_never_reads_outside_the_clone() -> None:
    train = build_parser().parse_args(["train"])
    assert train.input is None and train.simulate is None  # resolved to sim:300000 by the command
    assert build_parser().parse_args(["train", "--simulate", "5000"]).simulate == 5000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--simulate", "5000", "--input", "x.parquet"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--simulate", "-5"])


def test_a_missing_history_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path))
    missing = tmp_path / "nonexistent.parquet"
    assert main(["train", "--input", str(missing), "--mapping", "fdh", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # A usage error, caught by argument parsing (exit 2, the usage line above it).
    assert err[-1] == f"fraudstream train: error: argument --input: cannot read {missing}: no such file", err
    assert not any("Traceback" in line for line in err)
    assert main(["evaluate", "--input", "sim:nonsense"]) == 2
    assert "write a simulated history as sim:COUNT" in capsys.readouterr().err


def test_train_command_trains_on_the_simulator(tmp_path: Path) -> None:
    """The whole command in its own process, as a user runs it on a bare clone (a small population, so the
    history is 30 days long; the default, sim:300000, is what the demo's first model trains on)."""
    env = {**os.environ, "FRAUD_HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream", "train", "--input", "sim:30000?cards=500&terminals=1000", "--quick",
         "--epochs", "2", "--days", "3", "--no-tflite", "--threads", "1", "--json"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "simulated 30,000 transactions" in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["version"] == 1 and summary["labels"] == {"stable": 1}
    assert summary["metrics"]["auc_roc"] > 0.6, summary["metrics"]
    assert (tmp_path / "models" / "fraud_dnn" / "1" / "assets.extra" / "fraudstream_metadata.json").exists()
