"""Handbook-protocol evaluation: one model per fold, scores from a pluggable provider, JSON + PNG reports.

The provider is what differs between ``--via offline`` (the trained Keras model on offline features) and
``--via stream`` (the test window replayed through Kafka, the worker, Redis and the model backend): it
receives the fold's trained model and the test rows and returns one score per test row, in order; NaN for
a row it could not score, with the reason from ``unscored()``. Metrics are computed over the scored rows
and the report says how many rows were left out and why.

``scores_out`` writes one row per test transaction of every fold (``transaction_id``, ``fold``, ``score``,
plus ``label``, ``card_ref`` and ``day`` so the figures can be recomputed from the file alone, and
``unscored_reason``): CSV, or Parquet for a ``.parquet`` name.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd

from training.dataset import Fold, History, make_fold, split_validation
from training.metrics import METRIC_NAMES, compute_metrics, summarise
from training.model import ModelConfig, TrainedModel, train_model

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ScoreProvider(Protocol):
    """Scores a fold's test rows with its trained model: float64, aligned with ``fold.test_idx``; NaN for
    a row it could not score."""

    @property
    def name(self) -> str: ...

    def scores(self, trained: TrainedModel, history: History, fold: Fold) -> npt.NDArray[np.float64]: ...

    def unscored(self) -> Mapping[str, str]:
        """Transaction id → why it has no score, for the last ``scores`` call."""
        ...


@dataclass(frozen=True)
class OfflineScores:
    """The trained model applied in-process to the offline engine's feature vectors."""

    name: str = "offline"

    def scores(self, trained: TrainedModel, history: History, fold: Fold) -> npt.NDArray[np.float64]:
        return trained.predict(history.features[fold.test_idx])

    def unscored(self) -> Mapping[str, str]:
        return {}


CardHash = Callable[[str], str]
"""Turns a history's card id into the ``card_ref`` written to a scores file (the worker's keyed hash)."""


@dataclass(frozen=True)
class FoldScores:
    """One fold's test rows and scores as they go to ``--scores-out``."""

    frame: pd.DataFrame


def fit_fold(
    history: History,
    fold: Fold,
    config: ModelConfig,
    *,
    strategy: Any = None,
    log_dir: Path | None = None,
    verbose: bool = True,
) -> TrainedModel:
    """Train on the fold's training window, early-stopping on a stratified part of it."""
    x, y = history.features[fold.train_idx], history.y[fold.train_idx]
    fit_pos, val_pos = split_validation(y, config.validation_fraction, config.seed)
    validation = (x[val_pos], y[val_pos]) if len(val_pos) and y[val_pos].any() else None
    return train_model(
        history.spec,
        x[fit_pos],
        y[fit_pos],
        config,
        validation=validation,
        strategy=strategy,
        log_dir=str(log_dir) if log_dir else None,
        verbose=verbose,
    )


def write_plots(directory: Path, y: npt.NDArray[np.int8], scores: npt.NDArray[np.float64], title: str) -> list[str]:
    """``pr_curve.png`` and ``score_histograms.png`` (log-scaled counts per class) in ``directory``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt
    from sklearn.metrics import average_precision_score, precision_recall_curve

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(5, 4))
    if y.any():
        precision, recall, _ = precision_recall_curve(y, scores)
        ax.plot(recall, precision, label=f"AP={average_precision_score(y, scores):.3f}")
        ax.axhline(y.mean(), color="grey", linestyle=":", label=f"base rate {y.mean():.4f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"PR curve — {title}", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(directory / "pr_curve.png", dpi=100)
    written.append(str(directory / "pr_curve.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    bins = [i / 40 for i in range(41)]
    ax.hist(scores[y == 0], bins=bins, alpha=0.6, label=f"genuine (n={int((y == 0).sum())})", log=True)
    ax.hist(scores[y == 1], bins=bins, alpha=0.6, label=f"fraud (n={int((y == 1).sum())})", log=True)
    ax.set(xlabel="score", ylabel="transactions (log)", title=f"scores by class — {title}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "score_histograms.png", dpi=100)
    written.append(str(directory / "score_histograms.png"))
    plt.close(fig)
    return written


def evaluate_fold(
    history: History,
    fold: Fold,
    trained: TrainedModel,
    provider: ScoreProvider,
    run_dir: Path | None,
    *,
    card_hash: CardHash | None = None,
    collect: list[FoldScores] | None = None,
) -> dict[str, Any]:
    """Score the fold's test rows and compute its metrics over the rows that have a score; with ``collect``,
    append the fold's rows for a scores file (card ids through ``card_hash``)."""
    y = history.y[fold.test_idx]
    scores = np.asarray(provider.scores(trained, history, fold), dtype=np.float64)
    if scores.shape != (len(fold.test_idx),):
        msg = f"score provider {provider.name} returned {scores.shape}, expected ({len(fold.test_idx)},)"
        raise ValueError(msg)
    ids = history.transactions["transaction_id"].astype(str).to_numpy()[fold.test_idx]
    scored = np.isfinite(scores)
    reasons = dict(provider.unscored())
    cards, days = history.cards[fold.test_idx], history.day[fold.test_idx]
    if card_hash is not None:
        # the cards as a scores file names them, so that ties in CP@100 break as they do for its readers
        cards = np.asarray([card_hash(str(c)) for c in cards], dtype=object)
    metrics = compute_metrics(y[scored], scores[scored], cards[scored], days[scored])
    label = fold.train_start.date().isoformat()
    unscored = [(str(t), reasons.get(str(t), "no score")) for t in ids[~scored]]
    result: dict[str, Any] = {
        "train_start": label,
        "window": fold.window(),
        "metrics": metrics,
        "train_rows": len(fold.train_idx),
        "test_rows": len(fold.test_idx),
        "scored_rows": int(scored.sum()),
        "unscored_rows": len(unscored),
        "unscored_reasons": dict(Counter(reason for _, reason in unscored)),
        "unscored_examples": [{"transaction_id": t, "reason": r} for t, r in unscored[:10]],
        "test_frauds": int(y.sum()),
        "train_seconds": round(trained.train_seconds, 2),
        "best_epoch": trained.best_epoch,
    }
    if collect is not None:
        why = [None if ok else reasons.get(str(t), "no score") for t, ok in zip(ids, scored, strict=True)]
        collect.append(FoldScores(pd.DataFrame({
            "transaction_id": ids, "fold": label, "score": scores, "label": y.astype(np.int8),
            "card_ref": [str(c) for c in cards], "day": days, "unscored_reason": why,
        })))
    if run_dir is not None:
        fold_dir = run_dir / f"fold-{label}"
        result["plots"] = write_plots(fold_dir, y[scored], scores[scored], f"fold {label} ({provider.name})")
        (fold_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def write_scores(path: Path, folds: Sequence[FoldScores]) -> int:
    """Every fold's rows into one file (``.parquet`` → Parquet, else CSV); returns the row count. ``day`` is
    the UTC day number (days since 1970-01-01) that Card Precision@100 groups by; a missing ``score`` is a
    row that could not be scored (``unscored_reason`` says why)."""
    frame = pd.concat([f.frame for f in folds], ignore_index=True) if folds else pd.DataFrame(
        columns=["transaction_id", "fold", "score", "label", "card_ref", "day", "unscored_reason"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    else:
        # repr-exact floats: the scores must recompute the printed metrics bit for bit
        frame.to_csv(path, index=False, float_format="%.17g")
    return len(frame)


def evaluate_protocol(
    history: History,
    train_starts: Sequence[date],
    config: ModelConfig,
    provider: ScoreProvider,
    *,
    run_dir: Path | None = None,
    train_days: int = 7,
    gap_days: int = 7,
    test_days: int = 7,
    strategy: Any = None,
    progress: Progress = stderr_progress,
    scores_out: Path | None = None,
    card_hash: CardHash | None = None,
) -> dict[str, Any]:
    """Train one model per fold, score its test week through ``provider`` and report per fold and overall;
    with ``scores_out``, write every test row's score there (see ``write_scores``)."""
    started = time.perf_counter()
    folds = []
    collected: list[FoldScores] | None = [] if scores_out is not None else None
    for start in train_starts:
        fold = make_fold(history, start, train_days, gap_days, test_days)
        progress(f"fold {start}: {len(fold.train_idx)} train rows, {len(fold.test_idx)} test rows")
        log_dir = run_dir / f"fold-{start.isoformat()}" / "tensorboard" if run_dir else None
        trained = fit_fold(history, fold, config, strategy=strategy, log_dir=log_dir)
        result = evaluate_fold(history, fold, trained, provider, run_dir, card_hash=card_hash, collect=collected)
        progress(f"fold {start}: " + ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items()))
        if result["unscored_rows"]:
            progress(f"fold {start}: {result['unscored_rows']} test rows not scored, left out of the metrics: "
                     f"{result['unscored_reasons']}")
        folds.append(result)
    summary = summarise([f["metrics"] for f in folds])
    report: dict[str, Any] = {
        "protocol": "handbook",
        "via": provider.name,
        "feature_list": history.spec.as_json(),
        "feature_list_hash": history.spec.hash,
        "model_config": config.as_json(),
        "folds": folds,
        "mean": {k: summary[k]["mean"] for k in METRIC_NAMES if k in summary},
        "std": {k: summary[k]["std"] for k in METRIC_NAMES if k in summary},
        "unscored_rows": sum(f["unscored_rows"] for f in folds),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if scores_out is not None and collected is not None:
        report["scores_out"] = str(scores_out)
        report["scores_rows"] = write_scores(scores_out, collected)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        report["run_dir"] = str(run_dir)
        (run_dir / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
