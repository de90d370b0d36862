from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudstream.cli import main
from tests.fixtures.training import synthetic_history


@pytest.fixture()
def small_history(tmp_path: Path) -> tuple[Path, Path]:
    tx, labels = synthetic_history(days=21, per_day=30)
    frame = tx.assign(is_fraud=labels["is_fraud"].astype(int).to_numpy())
    csv = tmp_path / "history.csv"
    frame.to_csv(csv, index=False)
    mapping = tmp_path / "mapping.json"
    mapping.write_text(
        json.dumps(
            {
                "transaction_id": "transaction_id",
                "card": "card_ref",
                "terminal": "terminal_id",
                "event_time": "event_time",
                "amount": "amount",
                "label": "is_fraud",
            }
        )
    )
    return csv, mapping


def test_evaluate_cli_prints_per_fold_and_mean(
    small_history: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path / "home"))
    csv, mapping = small_history
    code = main(
        [
            "evaluate",
            "--input",
            str(csv),
            "--mapping",
            str(mapping),
            "--protocol",
            "handbook",
            "--train-starts",
            "2018-04-01",
            "--via",
            "offline",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--run-dir",
            str(tmp_path / "run"),
            "--json",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["protocol"] == "handbook" and result["via"] == "offline"
    assert [f["train_start"] for f in result["folds"]] == ["2018-04-01"]
    assert set(result["mean"]) == {"auc_roc", "average_precision", "card_precision_at_100"}
    assert set(result["folds"][0]["metrics"]) == set(result["mean"])
    assert (tmp_path / "run" / "evaluation.json").exists()
    assert (tmp_path / "run" / "fold-2018-04-01" / "pr_curve.png").exists()
