"""One training job: history → features → fold → fit → holdout metrics → export → promotion gate.

This is what ``fraudstream train``, ``fraudstream retrain`` and the trainer service run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from training.dataset import (
    DAY_S,
    ColumnMapping,
    FeatureSpec,
    History,
    build_history,
    default_feature_spec,
    load_history,
    make_fold,
)
from training.distribute import is_chief
from training.errors import DatasetError
from training.evaluate import OfflineScores, evaluate_fold, fit_fold, stderr_progress
from training.export import Holdout, export_version
from training.metrics import compute_metrics
from training.model import ModelConfig
from training.registry import GateConfig, ModelRegistry

Progress = Callable[[str], None]

# No boosted trees in the quick model: it is the demo's first model, where a minute matters more.
QUICK_CONFIG = ModelConfig(hidden=(64, 32), epochs=8, patience=3, batch_size=256, ensemble=1, trees=False)
# Longest feature window (30 days) + label delay (7 days) + slack: rows this far before the training
# start are enough for the windowed features. Off by default: the offline engine takes ~12 s for the
# whole fdh file, and "time since previous" features differ on a trimmed history, so the trainer sees
# exactly what the stream sees after a full replay.
DEFAULT_LOOKBACK_DAYS: int | None = None


@dataclass(frozen=True)
class TrainJob:
    input_path: Path
    mapping: Literal["fdh"] | ColumnMapping = "fdh"
    train_start: date | None = None
    """Default: the latest start whose test week still lies inside the history."""
    train_days: int = 7
    gap_days: int = 7
    test_days: int = 7
    config: ModelConfig = field(default_factory=ModelConfig)
    lookback_days: int | None = DEFAULT_LOOKBACK_DAYS
    """Drop history older than this before the training start (None keeps everything)."""
    limit: int | None = None
    promote: bool = True
    tflite: bool = True
    request_id: str | None = None

    @classmethod
    def quick(cls, input_path: Path, **overrides: Any) -> TrainJob:
        """Small model, few epochs: about a minute on two CPU cores (``make demo``'s first model)."""
        return replace(cls(input_path=input_path, config=QUICK_CONFIG), **overrides)


def default_train_start(event_time: npt.NDArray[np.float64], job: TrainJob) -> date:
    last_day = int(np.floor(event_time.max() / DAY_S))
    # The last day may be partial; the test week ends on the last complete day before it.
    start_day = last_day - (job.train_days + job.gap_days + job.test_days)
    return date(1970, 1, 1) + timedelta(days=start_day)


def load_job_history(job: TrainJob, spec: FeatureSpec | None, progress: Progress) -> tuple[History, date]:
    started = time.perf_counter()
    transactions, labels = load_history(job.input_path, job.mapping, job.limit, progress=progress)
    times = transactions["event_time"].to_numpy(dtype=np.float64)
    train_start = job.train_start or default_train_start(times, job)
    if job.lookback_days is not None:
        since = (train_start - date(1970, 1, 1)).days * DAY_S - job.lookback_days * DAY_S
        transactions = transactions[times >= since]
        labels = labels[labels["event_time"].to_numpy(dtype=np.float64) >= since]
    progress(f"loaded {len(transactions)} transactions in {time.perf_counter() - started:.1f}s; computing features")
    started = time.perf_counter()
    history = build_history(transactions, labels, spec or default_feature_spec())
    progress(f"offline features {history.features.shape} in {time.perf_counter() - started:.1f}s")
    return history, train_start


def score_saved_model(
    version_dir: Path, x: npt.NDArray[np.floating[Any]], expected_hash: str
) -> npt.NDArray[np.float64] | None:
    """Scores of an exported version, or None if it was trained on another feature list."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(version_dir))
    if "metadata" in loaded.signatures:
        found = loaded.signatures["metadata"]()["feature_list_hash"].numpy().decode()
        if found != expected_hash:
            return None
    serve = loaded.signatures["serving_default"]
    parts = [serve(features=tf.constant(x[i : i + 8192], tf.float32))["score"].numpy() for i in range(0, len(x), 8192)]
    return np.concatenate(parts).astype(np.float64) if parts else np.empty(0)


def run_training_job(
    job: TrainJob,
    *,
    repository: Path,
    model_name: str,
    runs_dir: Path,
    gate: GateConfig | None = None,
    spec: FeatureSpec | None = None,
    history: History | None = None,
    strategy: Any = None,
    progress: Progress = stderr_progress,
    serving_base_path: str | None = None,
) -> dict[str, Any]:
    """Train, evaluate on the following test week, export a new version and apply the promotion gate."""
    started = time.perf_counter()
    if history is None:
        history, train_start = load_job_history(job, spec, progress)
    else:
        train_start = job.train_start or default_train_start(
            history.transactions["event_time"].to_numpy(np.float64), job
        )
    fold = make_fold(history, train_start, job.train_days, job.gap_days, job.test_days)
    if len(fold.test_idx) == 0:
        msg = f"no test transactions after training start {train_start}; the history ends too early"
        raise DatasetError(msg)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = runs_dir / f"{stamp}-{job.request_id or 'train'}"
    progress(f"training on {len(fold.train_idx)} rows from {train_start}, testing on {len(fold.test_idx)} rows")
    trained = fit_fold(history, fold, job.config, strategy=strategy, log_dir=run_dir / "tensorboard")
    result = evaluate_fold(history, fold, trained, OfflineScores(), run_dir)
    metrics: dict[str, float] = result["metrics"]
    progress("holdout: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    if strategy is not None and not is_chief(strategy):
        # Every worker holds the same weights; only the chief writes the version and moves labels.
        return {"model_name": model_name, "version": None, "metrics": metrics, "chief": False}

    registry = ModelRegistry(repository, model_name, serving_base_path=serving_base_path)
    version = registry.next_version()
    holdout = Holdout(
        history.features[fold.test_idx],
        history.y[fold.test_idx],
        history.cards[fold.test_idx],
        history.day[fold.test_idx],
    )
    progress(f"exporting {model_name} version {version}")
    path, metadata = export_version(
        trained,
        registry.model_dir,
        version,
        training_window={"start": fold.window()["start"], "end": fold.window()["end"]},
        metrics=metrics,
        x_train=history.features[fold.train_idx],
        holdout=holdout,
        tflite=job.tflite,
        extra={
            "holdout_window": {"start": fold.window()["test_start"], "end": fold.window()["test_end"]},
            "request_id": job.request_id,
        },
    )
    decision = None
    if job.promote:
        stable = registry.labels().get("stable")
        stable_metrics = None
        if stable is not None:
            scores = score_saved_model(registry.version_dir(stable), holdout.x, history.spec.hash)
            if scores is not None:
                stable_metrics = compute_metrics(holdout.y, scores, holdout.cards, holdout.days)
        decision = registry.gate(version, metrics, stable_metrics, gate or GateConfig())
        progress(f"promotion gate: {decision.reason}")
    summary: dict[str, Any] = {
        "model_name": model_name,
        "version": version,
        "version_tag": metadata["version_tag"],
        "path": str(path),
        "metrics": metrics,
        # The preprocessing vectors stay in the metadata file; the summary is for people and logs.
        "tflite": {k: v for k, v in (metadata.get("tflite") or {}).items() if k != "preprocessing"} or None,
        "training_window": metadata["training_window"],
        "holdout_window": metadata["holdout_window"],
        "gate": decision.as_json() if decision else None,
        "labels": registry.labels(),
        "run_dir": str(run_dir),
        "train_seconds": round(trained.train_seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def already_trained(registry: ModelRegistry, version: int) -> dict[str, Any]:
    """The job summary of a request that already produced ``version``."""
    metadata = registry.metadata(version)
    label = next((name for name, v in registry.labels().items() if v == version), None)
    return {
        "model_name": registry.model_name,
        "version": version,
        "version_tag": metadata.get("version_tag", f"v{version}"),
        "path": str(registry.version_dir(version)),
        "metrics": metadata.get("metrics", {}),
        "training_window": metadata.get("training_window"),
        "gate": {"promoted_to": label, "reason": f"already trained as version {version}"},
        "labels": registry.labels(),
        "already_trained": True,
    }


def make_job_runner(
    defaults: TrainJob,
    *,
    repository: Path,
    model_name: str,
    runs_dir: Path,
    gate: GateConfig | None = None,
    spec: FeatureSpec | None = None,
    serving_base_path: str | None = None,
) -> Callable[[Any, Progress], dict[str, Any]]:
    """A ``TrainerService`` job runner: a ``RetrainRequest`` overrides ``defaults`` where it says so.

    One request id, one model version: a request that already produced a version (a redelivery after a
    restart) is answered with that version instead of training again."""

    def run(request: Any, progress: Progress) -> dict[str, Any]:
        registry = ModelRegistry(repository, model_name, serving_base_path=serving_base_path)
        done = registry.version_of_request(request.request_id)
        if done is not None:
            progress(f"request {request.request_id} already produced version {done}; not training it again")
            return already_trained(registry, done)
        job = replace(
            defaults,
            input_path=Path(request.input_path) if request.input_path else defaults.input_path,
            train_start=request.train_start or defaults.train_start,
            train_days=request.train_days,
            promote=request.promote,
            request_id=request.request_id,
        )
        return run_training_job(
            job,
            repository=repository,
            model_name=model_name,
            runs_dir=runs_dir,
            gate=gate,
            spec=spec,
            progress=progress,
            serving_base_path=serving_base_path,
        )

    return run
