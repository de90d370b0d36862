"""Factories for the trainer tests: a small synthetic history and a stand-in feature list."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from training.dataset import FeatureSpec
from training.model import ModelConfig

START = datetime(2018, 4, 1, tzinfo=UTC)
DAY = 86_400.0
TINY = ModelConfig(hidden=(8,), dropout=0.0, epochs=2, batch_size=64, patience=2, seed=7, ensemble=1, trees=False)
"""A model small enough that a test trains it in seconds."""


def synthetic_history(
    days: int = 21, per_day: int = 40, cards: int = 30, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Transactions and labels in ``load_fdh`` form; large amounts are mostly fraud (a learnable signal)."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    t0 = START.timestamp()
    times = np.sort(t0 + rng.uniform(0, days * DAY, size=n))
    amount = rng.gamma(2.0, 30.0, size=n)
    fraud = (amount > 150) & (rng.uniform(size=n) < 0.8) | (rng.uniform(size=n) < 0.01)
    amount[fraud] *= 1.5
    tx = pd.DataFrame(
        {
            "transaction_id": [str(i) for i in range(n)],
            "card_ref": [f"c{c}" for c in rng.integers(0, cards, size=n)],
            "terminal_id": [f"t{c}" for c in rng.integers(0, 50, size=n)],
            "event_time": times,
            "amount": amount,
            "latitude": np.nan,
            "longitude": np.nan,
        }
    )
    labels = tx[["transaction_id", "card_ref", "terminal_id", "event_time"]].copy()
    labels["available_at"] = times + 7 * DAY
    labels["is_fraud"] = fraud
    return tx, labels


def _stand_in_compute(tx: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    hour = (tx["event_time"].to_numpy() % DAY) / 3600.0
    count = tx.groupby("card_ref").cumcount().to_numpy(dtype=np.float64)
    return np.column_stack([tx["amount"].to_numpy(np.float64), hour, count])


STAND_IN_SPEC = FeatureSpec(
    name="stand_in", names=("amount", "hour", "card_count"), hash="stand-in-hash", compute=_stand_in_compute
)
