"""`evaluate --via stream` and `--via offline` agree: the same fold's test rows scored through Kafka, a real
worker, Redis features and the model give the offline engine's scores (float32 tolerance).

The history is the project's simulator (250 cards over 16 days, card-testing bursts, impossible travel,
compromised terminals, delayed labels): realistic enough for every feature to vary, and always there."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from config.settings import load_settings
from fraudstream.evaluation import StreamScores
from training.dataset import build_history, default_feature_spec, make_fold
from training.evaluate import OfflineScores, fit_fold
from training.model import ModelConfig
from training.simulated import load_simulated

pytestmark = pytest.mark.integration


def test_stream_and_offline_scores_agree(stack_home: Path, kafka_bootstrap: str, redis_url: str) -> None:
    transactions, labels = load_simulated("sim:8000?seed=3&cards=250&terminals=500")
    history = build_history(transactions, labels, default_feature_spec())
    assert history.y.sum() > 20  # frauds in the history: the label-risk features vary too
    first_day = date(1970, 1, 1) + timedelta(days=int(history.day.min()))
    fold = make_fold(history, first_day + timedelta(days=6), train_days=3, gap_days=2, test_days=3)
    trained = fit_fold(history, fold, ModelConfig(hidden=(16,), epochs=2, patience=1, batch_size=256),
                       verbose=False)

    offline = OfflineScores().scores(trained, history, fold)
    settings = load_settings(home=stack_home, kafka_bootstrap=kafka_bootstrap, redis_url=redis_url)
    streamed = StreamScores(settings).scores(trained, history, fold)

    assert streamed.shape == offline.shape == (len(fold.test_idx),)
    assert len(fold.test_idx) > 500
    np.testing.assert_allclose(streamed, offline, rtol=0, atol=1e-5)
