"""The warm-up a model version must pass before it serves, in the worker's hot reload and in ``models promote``.

TF Serving replays a version's ``assets.extra/tf_serving_warmup_requests`` before it routes traffic to it;
the embedded backend does the same and also looks at the answers: every request must succeed, give one
score per row, and every score (and contribution) must be finite. A version with NaN weights loads and
answers quickly — only its output says it is broken, and a NaN score would be decided by rules only
(``degraded``) on every record. The exporter writes real training rows as warm-up requests
(training/export.py); a version without the file is probed with one all-zero row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from scoring.errors import ModelRejected, NonFiniteOutput, ScoringError, WarmupFailed

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_DETAIL = 300


def rejection_reason(exc: ScoringError) -> str:
    """The metric label of a refused version: ``load`` (cannot load, no such signature), ``feature_hash``,
    ``warmup`` or ``non_finite``."""
    return exc.reason if isinstance(exc, ModelRejected) else "load"


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def warmup_batches(version_dir: Path, n_features: int) -> list[npt.NDArray[np.float32]]:
    """The ``features`` tensor of each recorded warm-up request; one zero row when there is no record."""
    path = version_dir / WARMUP_FILE
    if not path.is_file():
        return [np.zeros((1, n_features), np.float32)]
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    batches: list[npt.NDArray[np.float32]] = []
    try:
        for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            log = prediction_log_pb2.PredictionLog.FromString(raw)
            inputs = log.predict_log.request.inputs
            if "features" in inputs:
                batches.append(np.asarray(tf.make_ndarray(inputs["features"]), np.float32))
    except Exception as exc:  # a corrupt record file: TF and protobuf raise several unrelated types
        msg = f"{version_dir}: unreadable warm-up requests: {one_line(exc)}"
        raise WarmupFailed(msg) from exc
    return batches or [np.zeros((1, n_features), np.float32)]


def warm_up(
    signature: Callable[..., Mapping[str, Any]], version_dir: Path, n_features: int
) -> None:
    """Run the version's warm-up requests; raise ``WarmupFailed`` or ``NonFiniteOutput`` if it fails them."""
    import tensorflow as tf

    for batch in warmup_batches(version_dir, n_features):
        try:
            out = signature(features=tf.constant(batch))
            scores = np.asarray(out["score"].numpy(), np.float64).reshape(-1)
            contributions = out["contributions"].numpy() if "contributions" in out else None
        except Exception as exc:  # TF raises ValueError, TypeError, InvalidArgumentError, … for a bad call
            msg = f"{version_dir}: warm-up request of shape {batch.shape} failed: {one_line(exc)}"
            raise WarmupFailed(msg) from exc
        if scores.shape != (batch.shape[0],):
            msg = f"{version_dir}: {scores.shape[0]} scores for a warm-up request of {batch.shape[0]} rows"
            raise WarmupFailed(msg)
        bad = int(np.count_nonzero(~np.isfinite(scores)))
        if bad:
            msg = f"{version_dir}: {bad} of {scores.size} warm-up scores are NaN or infinite"
            raise NonFiniteOutput(msg)
        if contributions is not None and not np.all(np.isfinite(contributions)):
            msg = f"{version_dir}: the warm-up request's contributions are NaN or infinite"
            raise NonFiniteOutput(msg)
