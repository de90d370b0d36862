"""`evaluate --via stream` and `--via offline` agree: the same fold's test rows scored through Kafka, a real
worker, Redis features and the model give the offline engine's scores (float32 tolerance)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from features.history import load_fdh
from fraudstream.settings import load_settings
from streams.evaluation import StreamScores
from training.dataset import build_history, default_feature_spec, make_fold
from training.evaluate import OfflineScores, fit_fold
from training.model import ModelConfig

pytestmark = pytest.mark.integration
FDH = Path(__file__).resolve().parents[3] / "shared" / "data" / "fdh" / "transactions-2018-04-01_2018-07-31.parquet"


@pytest.mark.skipif(not FDH.exists(), reason="the fdh data set is not beside the checkout")
def test_stream_and_offline_scores_agree(stack_home: Path, kafka_bootstrap: str, redis_url: str) -> None:
    transactions, labels = load_fdh(FDH)
    cards = set(transactions["card_ref"].unique()[:250])
    day = 86_400.0
    start = transactions["event_time"].min()
    keep = transactions["card_ref"].isin(cards) & (transactions["event_time"] < start + 16 * day)
    transactions = transactions[keep].reset_index(drop=True)
    labels = labels[labels["transaction_id"].isin(set(transactions["transaction_id"]))]
    history = build_history(transactions, labels, default_feature_spec())
    fold = make_fold(history, date(2018, 4, 8), train_days=3, gap_days=2, test_days=3)
    trained = fit_fold(history, fold, ModelConfig(hidden=(16,), epochs=2, patience=1, batch_size=256),
                       verbose=False)

    offline = OfflineScores().scores(trained, history, fold)
    settings = load_settings(home=stack_home, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url)
    streamed = StreamScores(settings).scores(trained, history, fold)

    assert streamed.shape == offline.shape == (len(fold.test_idx),)
    assert len(fold.test_idx) > 500
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-5)
