"""Recompute the handbook metrics of an ``evaluate --scores-out`` file with scikit-learn and plain pandas,
independently of ``training.metrics``: what anyone with the file can do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def read_scores(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"transaction_id": str, "fold": str, "card_ref": str})


def card_precision_at_100(day_card_label_score: pd.DataFrame) -> float:
    """The handbook's Card Precision@100: per test day, cards detected earlier dropped, each card's max
    score and max label, top 100 by score, compromised / 100; the mean over days."""
    detected: set[str] = set()
    daily = []
    for _, day in day_card_label_score.groupby("day", sort=True):
        day = day[~day["card_ref"].isin(detected)]
        cards = day.groupby("card_ref")[["score", "label"]].max()
        top = cards.sort_values("score", ascending=False, kind="mergesort").head(100)
        hits = top.index[top["label"] == 1]
        daily.append(len(hits) / 100)
        detected.update(hits)
    return float(np.mean(daily))


def recompute(scores: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per fold: AUC ROC, AP (scikit-learn) and CP@100 over the rows that have a score."""
    out = {}
    for fold, rows in scores.groupby("fold", sort=True):
        rows = rows[rows["score"].notna()]
        out[str(fold)] = {
            "auc_roc": float(roc_auc_score(rows["label"], rows["score"])),
            "average_precision": float(average_precision_score(rows["label"], rows["score"])),
            "card_precision_at_100": card_precision_at_100(rows),
        }
    return out


def run_evaluate(args: list[str], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """``fraudstream evaluate …--json`` in a subprocess; its last stdout line is the report."""
    done = subprocess.run(
        [sys.executable, "-m", "fraudstream", "evaluate", *args, "--json"], env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def assert_recomputed(report: dict[str, Any], scores_file: Path, test_rows: int | None = None) -> None:
    scores = read_scores(scores_file)
    assert len(scores) == report["scores_rows"] == sum(f["test_rows"] for f in report["folds"])
    if test_rows is not None:
        assert len(scores) == test_rows
    assert scores["transaction_id"].is_unique or scores.groupby("fold")["transaction_id"].apply(
        lambda s: s.is_unique).all()
    again = recompute(scores)
    for fold in report["folds"]:
        for name, printed in fold["metrics"].items():
            assert again[fold["train_start"]][name] == printed, (fold["train_start"], name)
