"""``fraudstream evaluate --via stream --scores-out`` on the real stack: every test transaction of a simulated
fdh-format history (zero amounts included) is scored through Kafka, a worker and Redis, and the printed
metrics are recomputed from the written file with scikit-learn (runs on a bare clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from features import FEATURE_LIST
from fraudstream.stack import StackState
from tests.fixtures.evaluation import assert_recomputed, read_scores, run_evaluate
from tests.fixtures.simulated import fold_starts, simulated_fdh

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_stream_scores_out_scores_every_test_row_and_recomputes_the_printed_metrics(
    stack: StackState, tmp_path: Path
) -> None:
    history = tmp_path / "simulated.parquet"
    frame = simulated_fdh(history, days=36, cards=120, zero_share=0.02)
    (start,) = fold_starts(frame, 1)
    scores_file = tmp_path / "scores.parquet"
    report = run_evaluate(
        ["--input", str(history), "--mapping", "fdh", "--protocol", "handbook", "--via", "stream",
         "--train-starts", start.isoformat(), "--epochs", "2", "--threads", "1",
         "--run-dir", str(tmp_path / "run"), "--scores-out", str(scores_file)],
        {"FRAUD_HOME": str(tmp_path / "home"), "FRAUD_KAFKA_BOOTSTRAP": stack.bootstrap,
         "FRAUD_REDIS_URL": stack.redis_url},
        timeout_s=1500,
    )
    assert report["via"] == "stream" and report["feature_list_hash"] == FEATURE_LIST.hash
    assert report["unscored_rows"] == 0, report["folds"][0]["unscored_reasons"]
    assert_recomputed(report, scores_file)
    scores = read_scores(scores_file)
    zero_ids = set(frame.loc[frame["TX_AMOUNT"] == 0.0, "TRANSACTION_ID"].astype(str))
    tested_zero = zero_ids & set(scores["transaction_id"])
    assert tested_zero, "the test week should hold zero amounts"
    assert scores.set_index("transaction_id").loc[sorted(tested_zero), "score"].notna().all()
