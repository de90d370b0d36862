"""Scoring cost per row of the exported model, default ``ModelConfig`` against a baseline config, same run.

Both models are trained on the same fdh fold (``--epochs`` caps the DNN members: the cost of a forward
pass does not depend on how well the weights are trained; the trees stop early as in real training, so
their number of rounds is realistic), exported with ``training.export.write_saved_model`` (the
``serving_default`` signature the worker and TF Serving call: score + reason-code contributions), loaded
back and timed alternately, best of ``--repeats``, at batch 256 (the worker's micro-batch) and batch 1.

    nice -n 10 .venv/bin/python -m fraudstream.bench.model_cost \
        --input PATH/TO/fdh/transactions-2018-04-01_2018-07-31.parquet --json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np


def _time_per_row(serve: Any, rows: Any, calls: int) -> float:
    import tensorflow as tf

    batch = tf.constant(rows, tf.float32)
    serve(features=batch)  # traced and warm
    started = time.perf_counter()
    for _ in range(calls):
        serve(features=batch)["score"].numpy()
    return (time.perf_counter() - started) / (calls * len(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--train-start", default="2018-07-11")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--baseline", default='{"ensemble": 3, "trees": false}', help="ModelConfig fields of the baseline"
    )
    parser.add_argument(
        "--tree-rounds", type=int, default=None,
        help="build exactly this many boosting rounds (e.g. the count real training stopped at) instead of "
        "stopping early",
    )
    parser.add_argument("--rows", type=int, default=None, help="train on a random subset of the fold's rows")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from training.distribute import configure_threads

    configure_threads(args.threads, args.threads)
    from features.history import load_fdh
    from training.dataset import build_history, default_feature_spec, make_fold
    from training.evaluate import fit_fold
    from training.export import write_saved_model
    from training.model import ModelConfig

    transactions, labels = load_fdh(args.input)
    history = build_history(transactions, labels, default_feature_spec())
    fold = make_fold(history, date.fromisoformat(args.train_start))
    if args.rows:
        keep = np.sort(np.random.default_rng(0).choice(fold.train_idx, size=args.rows, replace=False))
        fold = replace(fold, train_idx=keep)
    rows = history.features[fold.test_idx][:256].astype(np.float32)
    rounds = {} if args.tree_rounds is None else {"tree_max_iter": args.tree_rounds, "tree_patience": 10**6}
    configs = {
        "default": replace(ModelConfig(), epochs=args.epochs, **rounds),
        "baseline": replace(ModelConfig(), epochs=args.epochs, **json.loads(args.baseline)),
    }
    import tensorflow as tf

    serves: dict[str, Any] = {}
    trained_info: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="fraudstream-cost-"))
    for name, config in configs.items():
        print(f"training {name}", file=sys.stderr, flush=True)
        trained = fit_fold(history, fold, config, verbose=False)
        trained_info[name] = {"config": config.as_json(), "tree_rounds": trained.tree_rounds}
        write_saved_model(trained, tmp / name)
        serves[name] = tf.saved_model.load(str(tmp / name)).signatures["serving_default"]
    per_row: dict[str, dict[str, list[float]]] = {n: {"256": [], "1": []} for n in serves}
    for _ in range(args.repeats):
        for name, serve in serves.items():  # alternating, so load changes hit both
            per_row[name]["256"].append(_time_per_row(serve, rows, 40))
            per_row[name]["1"].append(_time_per_row(serve, rows[:1], 400))
    best = {n: {b: min(v) * 1e6 for b, v in d.items()} for n, d in per_row.items()}
    result = {
        "us_per_row_batch256": {n: round(b["256"], 2) for n, b in best.items()},
        "us_per_call_batch1": {n: round(b["1"], 1) for n, b in best.items()},
        "ratio_batch256": round(best["default"]["256"] / best["baseline"]["256"], 2),
        "ratio_batch1": round(best["default"]["1"] / best["baseline"]["1"], 2),
        "models": trained_info,
        "threads": args.threads,
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
