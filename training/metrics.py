"""The handbook's three metrics, computed exactly as its reference code does.

AUC ROC and average precision are scikit-learn's over all test transactions. Card Precision@k follows
``card_precision_top_k`` of the Fraud Detection Handbook: per test day in order, cards detected on earlier
days are dropped, each card's maximum score and maximum label that day are taken, the top ``k`` cards by
score are kept and precision = compromised cards among them / k (divided by k even if fewer cards exist);
the result is the mean over days.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

METRIC_NAMES: tuple[str, ...] = ("auc_roc", "average_precision", "card_precision_at_100")


def card_precision_at_k(
    cards: Sequence[object] | npt.NDArray[np.generic] | pd.Series,
    days: Sequence[int] | npt.NDArray[np.integer] | pd.Series,
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    k: int = 100,
) -> float:
    """Mean over test days of the share of compromised cards among the ``k`` highest-scored cards."""
    frame = pd.DataFrame(
        {
            "card": np.asarray(cards),
            "day": np.asarray(days),
            "label": np.asarray(labels, dtype=np.int64),
            "score": np.asarray(scores, dtype=np.float64),
        }
    )
    if frame.empty:
        return float("nan")
    detected: set[object] = set()
    per_day: list[float] = []
    for day in sorted(frame["day"].unique()):
        day_frame = frame[frame["day"] == day]
        day_frame = day_frame[~day_frame["card"].isin(detected)]
        per_card = day_frame.groupby("card")[["score", "label"]].max()
        # Stable sort, ties broken by card id (the groupby order), so the figure is reproducible; the
        # handbook's default quicksort leaves tie order unspecified.
        top = per_card.sort_values("score", ascending=False, kind="mergesort").head(k)
        compromised = top.index[top["label"] == 1]
        per_day.append(len(compromised) / k)
        detected.update(compromised.tolist())
    return float(np.mean(per_day))


def compute_metrics(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    cards: Sequence[object] | npt.NDArray[np.generic] | pd.Series,
    days: Sequence[int] | npt.NDArray[np.integer] | pd.Series,
    k: int = 100,
) -> dict[str, float]:
    """``auc_roc``, ``average_precision`` and ``card_precision_at_100`` of one test set."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.min(initial=0) == y.max(initial=0):
        # Both ROC and PR are undefined with one class; NaN says so instead of a misleading 0.
        auc = ap = float("nan")
    else:
        auc = float(roc_auc_score(y, s))
        ap = float(average_precision_score(y, s))
    return {
        "auc_roc": auc,
        "average_precision": ap,
        f"card_precision_at_{k}": card_precision_at_k(cards, days, y, s, k=k),
    }


def summarise(per_fold: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1, pandas' default, which the handbook's tables use) over folds."""
    names = sorted({name for fold in per_fold for name in fold})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([fold[name] for fold in per_fold if name in fold], dtype=np.float64)
        std = float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0
        out[name] = {"mean": float(np.nanmean(values)), "std": std}
    return out
