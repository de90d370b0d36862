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


def test_model_config_overrides_the_default_and_is_reported(
    small_history: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FRAUD_HOME", str(tmp_path / "home"))
    csv, mapping = small_history
    overrides = {"trees": False, "ensemble": 1, "hidden": [8], "loss": "focal", "focal_gamma": 1}
    code = main(["evaluate", "--input", str(csv), "--mapping", str(mapping), "--train-starts", "2018-04-01",
                 "--epochs", "1", "--threads", "1", "--model-config", json.dumps(overrides), "--json"])
    assert code == 0
    config = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["model_config"]
    assert config["trees"] is False and config["ensemble"] == 1 and config["hidden"] == [8]
    assert config["loss"] == "focal" and config["focal_gamma"] == 1.0 and config["epochs"] == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"tree": false}', "unknown ModelConfig fields ['tree']"),
        ('{"trees": 0}', "trees must be bool, not 0"),
        ('{"ensemble": true}', "ensemble must be int, not true"),
        ('{"loss": "focl"}', "loss must be one of ['bce', 'focal'], not \"focl\""),
        ("[1]", "must be a JSON object"),
        ("{trees}", "not JSON"),
    ],
)
def test_model_config_rejects_what_it_cannot_apply(text: str, why: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--model-config", text]) == 2  # argparse's usage error, before any work
    assert why in capsys.readouterr().err
