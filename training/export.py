"""Write a trained model in TF Serving layout, with warmup requests, metadata and a TFLite int8 twin.

Layout (the contract ``scoring/`` loads)::

    <repository>/<model_name>/<version>/            SavedModel: signatures serving_default, metadata
    <version>/assets.extra/tf_serving_warmup_requests  TFRecord of PredictionLog(PredictRequest)
    <version>/assets.extra/fraudstream_metadata.json
    <version>/assets.extra/model_int8.tflite         (when the TFLite export ran)

A version is written into a hidden temporary directory and renamed into place, so TF Serving's poller
and the local backend's hot reload never see a half-written version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.errors import ExportError
from training.metrics import compute_metrics
from training.model import TrainedModel

WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "fraudstream_metadata.json"
TFLITE_FILE = "model_int8.tflite"
SCORE_EDGES = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class Holdout:
    """A labelled test set with what Card Precision needs (card and day per row)."""

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.int8]
    cards: npt.NDArray[Any]
    days: npt.NDArray[np.int64]


def reference_distributions(
    trained: TrainedModel, x_train: npt.NDArray[np.floating[Any]], bins: int = 10
) -> dict[str, Any]:
    """Training-set score and feature histograms that drift monitoring compares live traffic against."""
    scores = trained.predict(x_train)
    counts, _ = np.histogram(scores, bins=SCORE_EDGES)
    features: dict[str, Any] = {}
    for name, col in zip(trained.spec.names, np.asarray(x_train, np.float64).T, strict=True):
        # Quantile edges give every bin mass on the reference data, so a population-stability index on
        # live data has no empty reference bins; the outer edges are open so outliers still count.
        edges = np.unique(np.quantile(col, np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        edges[0], edges[-1] = -np.inf, np.inf
        c, _ = np.histogram(col, bins=edges)
        features[name] = {"edges": [_json_float(e) for e in edges], "counts": c.astype(int).tolist()}
    return {
        "score_histogram": {"edges": SCORE_EDGES.tolist(), "counts": counts.astype(int).tolist()},
        "features": features,
    }


def _json_float(value: float) -> float | str:
    # JSON has no infinity; the strings are what Python's float() parses back.
    return value if np.isfinite(value) else ("inf" if value > 0 else "-inf")


def write_saved_model(trained: TrainedModel, path: Path) -> None:
    """SavedModel with ``serving_default`` (score + contributions) and ``metadata`` signatures."""
    import keras
    import tensorflow as tf

    names = list(trained.spec.names)
    preprocess, head = trained.preprocess, trained.head
    explained = trained.logit_head or trained.head

    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        z = preprocess(features, training=False)
        with tf.GradientTape() as tape:
            tape.watch(z)
            # The logit, not the probability: sigmoid'(x) underflows to 0 for confident frauds.
            logit = tf.reshape(explained(z, training=False), [-1])
        # Rows are independent, so the gradient of the batch sum is each row's own gradient.
        grad = tape.gradient(logit, z)
        score = tf.reshape(head(z, training=False), [-1])
        return {"score": score, "contributions": grad * z}

    def metadata() -> dict[str, tf.Tensor]:
        return {
            "feature_list_hash": tf.constant(trained.spec.hash, dtype=tf.string),
            "feature_names": tf.constant(names, dtype=tf.string),
        }

    archive = keras.export.ExportArchive()
    archive.track(trained.model)
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec([None, len(names)], tf.float32, name="features")],
    )
    archive.add_endpoint("metadata", metadata, input_signature=[])
    archive.write_out(str(path), verbose=False)


def write_warmup(path: Path, model_name: str, sample: npt.NDArray[np.floating[Any]], n_requests: int = 4) -> None:
    """A few PredictRequests (batch sizes 1, 2, 4, 8) so TF Serving compiles before live traffic."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(n_requests):
            rows = np.asarray(sample[: 2**i], np.float32)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = "serving_default"
            request.inputs["features"].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.float32))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def write_tflite_int8(
    trained: TrainedModel, path: Path, representative: npt.NDArray[np.floating[Any]], seed: int = 0
) -> None:
    """Int8-quantised head, calibrated on ``representative`` rows after preprocessing (float in and out).

    The TFLite model takes the *normalised* vector: quantising the raw vector with one input scale would
    crush small-range features (flags, rates) next to ones spanning millions (seconds since the previous
    transaction) — measured: a constant score. The preprocessing is three float vectors, recorded in
    the metadata (``tflite.preprocessing``) for an edge runtime to apply first.
    """
    import keras
    import tensorflow as tf

    n_features = len(trained.spec.names)
    model = trained.head
    # Converting from a SavedModel freezes the variables into constants; converting the live concrete
    # function leaves READ_VARIABLE ops that the calibrator cannot run.
    score_only = Path(tempfile.mkdtemp(prefix="fraudstream-tflite-"))
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda x: {"score": tf.reshape(model(x, training=False), [-1])},
        input_signature=[tf.TensorSpec([None, n_features], tf.float32, name="normalised")],
    )
    archive.write_out(str(score_only), verbose=False)
    rng = np.random.default_rng(seed)
    sample = preprocess_numpy(trained, representative)
    sample = sample[rng.choice(len(sample), size=min(len(sample), 500), replace=False)]

    def rep() -> Any:
        for row in sample:
            yield [row.reshape(1, -1)]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(score_only))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = rep
    # Int8 kernels where they exist, float fallback otherwise; float input/output (quantised inside).
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    try:
        path.write_bytes(converter.convert())
    finally:
        shutil.rmtree(score_only, ignore_errors=True)


def preprocessing_params(trained: TrainedModel) -> dict[str, list[float] | list[bool]]:
    """What the model does before the head: ``z = (slog(x) - mean) / sqrt(variance)`` on log columns."""
    log_layer = trained.preprocess.get_layer("signed_log1p")
    norm = trained.preprocess.get_layer("normalise")
    return {
        "log_mask": list(log_layer.mask_values),
        "mean": np.asarray(norm.mean, np.float64).reshape(-1).tolist(),
        "variance": np.asarray(norm.variance, np.float64).reshape(-1).tolist(),
    }


def preprocess_numpy(trained: TrainedModel, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    out = trained.preprocess.predict(np.asarray(x, np.float32), batch_size=8192, verbose=0)
    return np.asarray(out, np.float32)


def tflite_predict(path: Path, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Scores of the TFLite head for already-normalised rows ``x``."""
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=1)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [len(x), x.shape[1]])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], np.asarray(x, np.float32))
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    return np.asarray(interpreter.get_tensor(out["index"]), np.float64).reshape(-1)


def tflite_report(trained: TrainedModel, path: Path, holdout: Holdout) -> dict[str, Any]:
    """Metrics of the int8 model on the holdout and their difference to the float model."""
    float_scores = trained.predict(holdout.x)
    int8_scores = tflite_predict(path, preprocess_numpy(trained, holdout.x))
    m_float = compute_metrics(holdout.y, float_scores, holdout.cards, holdout.days)
    m_int8 = compute_metrics(holdout.y, int8_scores, holdout.cards, holdout.days)
    return {
        "file": TFLITE_FILE,
        "quantization": "int8 weights and activations (calibrated), float32 input/output",
        "input": "normalised features (apply preprocessing first)",
        "preprocessing": preprocessing_params(trained),
        "size_bytes": path.stat().st_size,
        "max_abs_score_diff": float(np.max(np.abs(float_scores - int8_scores))) if len(float_scores) else 0.0,
        "metrics": m_int8,
        "metric_diff": {k: m_int8[k] - m_float[k] for k in m_float},
    }


def export_version(
    trained: TrainedModel,
    model_dir: Path,
    version: int,
    *,
    training_window: dict[str, str],
    metrics: dict[str, float],
    x_train: npt.NDArray[np.floating[Any]],
    holdout: Holdout | None = None,
    tflite: bool = True,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Write version ``version`` under ``model_dir`` atomically; returns its path and metadata."""
    final = model_dir / str(version)
    if final.exists():
        msg = f"version {version} already exists at {final}; versions only grow"
        raise ExportError(msg)
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    try:
        write_saved_model(trained, tmp)
        extra_dir = tmp / "assets.extra"
        extra_dir.mkdir(exist_ok=True)
        write_warmup(extra_dir / WARMUP_FILE, model_dir.name, np.asarray(x_train[:8]))
        metadata: dict[str, Any] = {
            "model_name": model_dir.name,
            "version": version,
            "version_tag": f"v{version}",
            "feature_list": trained.spec.as_json(),
            "training_window": training_window,
            "metrics": metrics,
            "reference": reference_distributions(trained, x_train),
            "model_config": trained.config.as_json(),
            "training": {
                "rows": trained.train_rows,
                "seconds": round(trained.train_seconds, 2),
                "best_epoch": trained.best_epoch,
            },
            "created_at": datetime.now(UTC).isoformat(),
            **(extra or {}),
        }
        if tflite and holdout is not None and len(holdout.x):
            write_tflite_int8(trained, extra_dir / TFLITE_FILE, x_train)
            metadata["tflite"] = tflite_report(trained, extra_dir / TFLITE_FILE, holdout)
        (extra_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        tmp.rename(final)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, ExportError):
            raise
        msg = f"export of version {version} to {model_dir} failed: {exc}"
        raise ExportError(msg) from exc
    return final, metadata


def read_metadata(version_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((version_dir / "assets.extra" / METADATA_FILE).read_text())
    return data
