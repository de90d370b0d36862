"""Model-selection experiments on the handbook's selection folds, through the same code as ``evaluate``.

``fraudstream evaluate`` recomputes the offline features and trains a fixed model; an A/B sweep needs the
feature matrix once and many models on it. This script computes the features of a feature list once
(cached as .npy under ``--cache``, keyed by the list's hash), then trains and scores each variant with
``training.evaluate.fit_fold`` / ``compute_metrics`` — the code path ``evaluate --via offline`` runs — on
the folds, and appends one JSON line per run to ``--out``.

Variants:

- ``--config '{"ensemble": 1, "hidden": [256, 128]}'``: ``ModelConfig`` fields over the default;
- ``--drop REGEX`` / ``--keep REGEX``: feature columns removed / kept by name (subsets of the list);
- ``--features NAME``: a candidate list from ``fraudstream.bench.quality_candidates`` (``NAME_FEATURES``:
  ``v1``, the list before #22's spending baselines; ``episode``) instead of ``FEATURE_LIST``, so features
  can be A/B'd before they become the default.

Example (the machine is shared: nice, and two TensorFlow threads)::

    nice -n 10 .venv/bin/python -m fraudstream.bench.quality_lab \
        --input PATH/TO/fdh/transactions-2018-04-01_2018-07-31.parquet \
        --config '{"ensemble": 1}' --seeds 42,43 --name "1 seed" --json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.dataset import MODEL_SELECTION_STARTS, FeatureSpec, History, make_fold
from training.metrics import METRIC_NAMES, compute_metrics, summarise
from training.model import ModelConfig


def feature_list(name: str) -> Any:
    if name == "default":
        from features import FEATURE_LIST

        return FEATURE_LIST
    import importlib

    module = importlib.import_module("fraudstream.bench.quality_candidates")
    return getattr(module, name.upper() + "_FEATURES")


def load_history(path: Path, list_name: str, cache: Path) -> History:
    from features.history import load_fdh
    from features.offline import compute_offline
    from training.dataset import build_history

    features = feature_list(list_name)
    cache.mkdir(parents=True, exist_ok=True)
    stem = cache / f"{features.hash[:16]}"
    transactions, labels = load_fdh(path)
    if stem.with_suffix(".npy").exists():
        x = np.load(stem.with_suffix(".npy"))

        def compute(t: Any, lab: Any) -> Any:
            return x
    else:
        started = time.perf_counter()

        def compute(t: Any, lab: Any) -> Any:
            out = compute_offline(t, lab, features=features)
            np.save(stem.with_suffix(".npy"), out)
            return out

        print(f"computing {len(features)} features ...", file=sys.stderr, flush=True)
        _ = started
    spec = FeatureSpec(name=features.name, names=tuple(features.names), hash=features.hash, compute=compute)
    return build_history(transactions, labels, spec)


def select(history: History, keep: str | None, drop: str | None) -> History:
    names = list(history.spec.names)
    cols = [
        i
        for i, n in enumerate(names)
        if (keep is None or re.search(keep, n)) and (drop is None or not re.search(drop, n))
    ]
    if len(cols) == len(names):
        return history
    x = history.features[:, cols]
    spec = FeatureSpec(
        name=history.spec.name + "-subset",
        names=tuple(names[i] for i in cols),
        hash="subset",
        compute=lambda _t, _l: x,
    )
    return History(transactions=history.transactions, features=x, y=history.y, day=history.day, spec=spec)


def make_config(overrides: dict[str, Any], seed: int) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    unknown = set(overrides) - known
    if unknown:
        msg = f"unknown ModelConfig fields {sorted(unknown)}"
        raise SystemExit(msg)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return replace(ModelConfig(), **values, seed=seed)  # type: ignore[arg-type]  # fields checked above


class _Fitted:
    def __init__(self, model: Any, seconds: float, best: int) -> None:
        self.model, self.train_seconds, self.best_epoch = model, seconds, best

    def predict(self, x: Any) -> Any:
        return self.model.predict_proba(x)[:, 1]


def fit_hgb(history: History, fold: Any, params: dict[str, Any], seed: int) -> _Fitted:
    """Gradient-boosted trees on the same training window, early-stopping on the same kind of split."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = history.features[fold.train_idx], history.y[fold.train_idx]
    defaults: dict[str, Any] = {"max_iter": 500, "learning_rate": 0.05, "max_leaf_nodes": 31,
                                "early_stopping": True, "validation_fraction": 0.2, "n_iter_no_change": 30,
                                "scoring": "average_precision", "l2_regularization": 1.0}
    model = HistGradientBoostingClassifier(**{**defaults, **params}, random_state=seed)
    started = time.perf_counter()
    model.fit(x, y)
    return _Fitted(model, time.perf_counter() - started, int(model.n_iter_))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--features", default="default")
    parser.add_argument("--keep", default=None)
    parser.add_argument("--drop", default=None)
    parser.add_argument("--config", default="{}")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--folds", default=",".join(d.isoformat() for d in MODEL_SELECTION_STARTS))
    parser.add_argument("--name", default="")
    parser.add_argument("--model", choices=("dnn", "hgb"), default="dnn",
                        help="hgb: scikit-learn's HistGradientBoostingClassifier (--config: its parameters)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/fraudstream-lab"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/fraudstream-lab/results.jsonl"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from datetime import date

    from training.distribute import configure_threads

    configure_threads(args.threads, args.threads)
    from training.evaluate import fit_fold

    started = time.perf_counter()
    history = select(load_history(args.input, args.features, args.cache), args.keep, args.drop)
    overrides = json.loads(args.config)
    seeds = [int(s) for s in args.seeds.split(",")]
    starts = [date.fromisoformat(s) for s in args.folds.split(",")]
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        folds: list[dict[str, Any]] = []
        for start in starts:
            fold = make_fold(history, start)
            trained: Any
            if args.model == "hgb":
                trained = fit_hgb(history, fold, overrides, seed)
            else:
                trained = fit_fold(history, fold, make_config(overrides, seed), verbose=False)
            scores = trained.predict(history.features[fold.test_idx])
            idx = fold.test_idx
            metrics = compute_metrics(history.y[idx], scores, history.cards[idx], history.day[idx])
            folds.append({"start": start.isoformat(), **metrics, "train_s": round(trained.train_seconds, 1),
                          "best_epoch": trained.best_epoch})
            print(f"  seed {seed} fold {start}: " + " ".join(f"{k}={metrics[k]:.4f}" for k in METRIC_NAMES)
                  + f" ({trained.train_seconds:.0f}s, epoch {trained.best_epoch})", file=sys.stderr, flush=True)
        summary = summarise([{k: f[k] for k in METRIC_NAMES} for f in folds])
        per_seed.append({"seed": seed, "folds": folds, "mean": {k: summary[k]["mean"] for k in METRIC_NAMES},
                         "std": {k: summary[k]["std"] for k in METRIC_NAMES}})
        print(f"seed {seed}: " + " ".join(f"{k}={summary[k]['mean']:.4f}±{summary[k]['std']:.4f}"
                                          for k in METRIC_NAMES), file=sys.stderr, flush=True)
    means = np.array([[s["mean"][k] for k in METRIC_NAMES] for s in per_seed])
    result = {
        "name": args.name,
        "features": args.features,
        "keep": args.keep,
        "drop": args.drop,
        "n_features": len(history.spec.names),
        "config": overrides,
        "seeds": seeds,
        "per_seed": per_seed,
        "mean_over_seeds": dict(zip(METRIC_NAMES, means.mean(axis=0).round(4).tolist(), strict=True)),
        "seed_std": dict(zip(METRIC_NAMES, (means.std(axis=0, ddof=1) if len(seeds) > 1 else 0 * means[0])
                             .round(4).tolist(), strict=True)),
        "fold_std_mean": {k: round(float(np.mean([s["std"][k] for s in per_seed])), 4) for k in METRIC_NAMES},
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write(json.dumps(result) + "\n")
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
