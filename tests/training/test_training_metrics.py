from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from training.metrics import card_precision_at_k, compute_metrics, summarise


def test_card_precision_one_day_by_hand() -> None:
    # Card max scores: A 0.9 (fraud), B 0.8 (genuine), C 0.7 (fraud, its max label counts), D 0.1.
    cards = ["A", "A", "B", "C", "C", "D"]
    scores = [0.9, 0.2, 0.8, 0.1, 0.7, 0.1]
    labels = [1, 0, 0, 0, 1, 0]
    days = [0] * 6
    assert card_precision_at_k(cards, days, labels, scores, k=2) == pytest.approx(0.5)  # A, B
    assert card_precision_at_k(cards, days, labels, scores, k=3) == pytest.approx(2 / 3)  # A, B, C


def test_card_precision_drops_cards_detected_on_earlier_days() -> None:
    # Day 0: top-1 is A (fraud) → detected. Day 1: A is dropped, so top-1 is B (genuine) → 0.
    cards = ["A", "B", "A", "B"]
    days = [0, 0, 1, 1]
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.1, 0.9, 0.5]
    assert card_precision_at_k(cards, days, labels, scores, k=1) == pytest.approx((1.0 + 0.0) / 2)


def test_card_precision_divides_by_k_even_with_fewer_cards() -> None:
    # The handbook divides by k, not by the number of cards that day.
    assert card_precision_at_k(["A", "B"], [0, 0], [1, 1], [0.5, 0.4], k=100) == pytest.approx(0.02)


def test_genuine_card_in_top_k_stays_eligible_next_day() -> None:
    # Only *compromised* cards found in the top k are removed; a genuine one may rank again.
    cards = ["B", "B"]
    days = [0, 1]
    assert card_precision_at_k(cards, days, [0, 1], [0.9, 0.9], k=1) == pytest.approx(0.5)


def test_auc_and_ap_are_scikit_learns() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    s = rng.uniform(size=200) + y * 0.3
    m = compute_metrics(y, s, np.arange(200) % 7, np.arange(200) // 50)
    assert m["auc_roc"] == pytest.approx(roc_auc_score(y, s))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, s))
    assert set(m) == {"auc_roc", "average_precision", "card_precision_at_100"}


def test_one_class_holdout_gives_nan_not_zero() -> None:
    m = compute_metrics([0, 0, 0], [0.1, 0.2, 0.3], ["a", "b", "c"], [0, 0, 0])
    assert np.isnan(m["auc_roc"]) and np.isnan(m["average_precision"])


def test_summary_uses_sample_std() -> None:
    out = summarise([{"auc_roc": 0.8}, {"auc_roc": 0.9}])
    assert out["auc_roc"]["mean"] == pytest.approx(0.85)
    assert out["auc_roc"]["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))
