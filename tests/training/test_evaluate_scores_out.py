"""``fraudstream evaluate --via offline --scores-out``: one row per test transaction, and the printed
metrics recomputed from the file alone with scikit-learn (simulated history: runs on a bare clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from features import FEATURE_LIST
from tests.fixtures.evaluation import assert_recomputed, read_scores, run_evaluate
from tests.fixtures.simulated import fold_starts, simulated_fdh

FDH_ENV = "FRAUDSTREAM_TEST_FDH"
"""Path of the fdh Parquet file for the tests whose subject it is; unset = those tests skip."""


@pytest.mark.slow
def test_offline_scores_out_recomputes_the_printed_metrics(tmp_path: Path) -> None:
    history = tmp_path / "simulated.parquet"
    frame = simulated_fdh(history, days=40, cards=150)
    starts = fold_starts(frame, 2)
    scores_file = tmp_path / "scores.csv"
    report = run_evaluate(
        ["--input", str(history), "--mapping", "fdh", "--protocol", "handbook", "--via", "offline",
         "--train-starts", ",".join(d.isoformat() for d in starts), "--epochs", "2", "--threads", "1",
         "--run-dir", str(tmp_path / "run"), "--scores-out", str(scores_file)],
        {"FRAUD_HOME": str(tmp_path / "home")}, timeout_s=900,
    )
    assert report["feature_list_hash"] == FEATURE_LIST.hash
    assert report["model_config"]["hidden"] and report["model_config"]["epochs"] == 2
    assert report["unscored_rows"] == 0
    assert_recomputed(report, scores_file)
    scores = read_scores(scores_file)
    assert set(scores.columns) >= {"transaction_id", "fold", "score", "label", "card_ref", "day"}
    assert (scores["card_ref"].str.len() == 32).all()  # the worker's keyed hash, never the card id
    zero_ids = set(frame.loc[frame["TX_AMOUNT"] == 0.0, "TRANSACTION_ID"].astype(str))
    assert zero_ids & set(scores["transaction_id"]), "the test weeks should hold zero amounts"


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get(FDH_ENV), reason=f"set {FDH_ENV} to the fdh Parquet file to run this")
def test_offline_scores_out_on_the_fdh_file_recomputes_the_printed_metrics(tmp_path: Path) -> None:
    scores_file = tmp_path / "scores.parquet"
    report = run_evaluate(
        ["--input", os.environ[FDH_ENV], "--mapping", "fdh", "--protocol", "handbook", "--via", "offline",
         "--train-starts", "2018-07-11", "--epochs", "2", "--run-dir", str(tmp_path / "run"),
         "--scores-out", str(scores_file)],
        {"FRAUD_HOME": str(tmp_path / "home")}, timeout_s=1800,
    )
    assert_recomputed(report, scores_file)
