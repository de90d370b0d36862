"""Exports a tiny but real fraud DNN in the model-repository layout the trainer produces.

``<repo>/<model>/<version>/`` is a SavedModel with the ``serving_default`` signature (input ``features``
float32 [None, F]; outputs ``score`` [None] and ``contributions`` [None, F]) and a ``metadata`` signature
(``feature_list_hash``, ``feature_names``), plus ``assets.extra/fraudstream_metadata.json`` and
``assets.extra/tf_serving_warmup_requests``.

Contributions are gradient × normalised input of the *logit* (not of the sigmoid score): the sigmoid
saturates on extreme inputs, which would zero every gradient exactly when an explanation matters most.
For a ReLU network the contributions then sum to the logit minus the network's bias path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

DEFAULT_FEATURES: tuple[str, ...] = (
    "amount",
    "amount_log",
    "card_tx_count_1d",
    "card_tx_count_7d",
    "card_tx_count_30d",
    "card_amount_mean_1d",
    "card_amount_mean_7d",
    "card_amount_mean_30d",
    "terminal_tx_count_1d",
    "terminal_tx_count_7d",
    "terminal_tx_count_30d",
    "terminal_risk_1d",
    "terminal_risk_7d",
    "terminal_risk_30d",
    "is_night",
    "is_weekend",
)
PLANTED_FEATURE = "amount"
"""A feature wired so that a huge value always raises the score: the planted case for reason codes."""


def feature_list_hash(names: Sequence[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


class _FraudDnn(tf.Module):  # type: ignore[misc]
    def __init__(
        self, *, names: Sequence[str], feature_hash: str, seed: int, hidden: int, width: int | None = None
    ) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        n = len(names) if width is None else width
        # The "Normalization step": mean and variance as a Keras Normalization layer would adapt them.
        self.mean = tf.Variable(rng.normal(0.0, 1.0, n).astype(np.float32), trainable=False)
        self.std = tf.Variable(rng.uniform(0.5, 2.0, n).astype(np.float32), trainable=False)
        w1 = rng.normal(0.0, 0.4, (n, hidden)).astype(np.float32)
        if PLANTED_FEATURE in names[:n]:
            w1[list(names).index(PLANTED_FEATURE)] = np.abs(w1[list(names).index(PLANTED_FEATURE)]) + 0.1
        self.w1 = tf.Variable(w1)
        self.b1 = tf.Variable(rng.normal(0.0, 0.1, hidden).astype(np.float32))
        self.w2 = tf.Variable(np.abs(rng.normal(0.0, 0.4, (hidden, 1))).astype(np.float32))
        self.b2 = tf.Variable(np.float32(-2.0))
        self._hash = feature_hash
        self._names = list(names)
        self._n = n

    def _logit(self, z: tf.Tensor) -> tf.Tensor:
        hidden = tf.nn.relu(tf.matmul(z, self.w1) + self.b1)
        return tf.squeeze(tf.matmul(hidden, self.w2), axis=-1) + self.b2

    def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        z = (features - self.mean) / self.std
        with tf.GradientTape() as tape:
            tape.watch(z)
            logit = self._logit(z)
        gradient = tape.gradient(logit, z)
        return {"score": tf.sigmoid(logit), "contributions": gradient * z}

    def metadata(self) -> dict[str, tf.Tensor]:
        return {"feature_list_hash": tf.constant(self._hash), "feature_names": tf.constant(self._names)}


def export_model(
    repo: Path,
    *,
    model_name: str = "fraud_dnn",
    version: int = 1,
    feature_names: Sequence[str] = DEFAULT_FEATURES,
    feature_hash: str | None = None,
    seed: int | None = None,
    hidden: int = 32,
    nan_weights: bool = False,
    input_width: int | None = None,
) -> Path:
    """Export one version atomically (temp directory, then rename) and return its directory.

    Broken versions for the refusal tests: ``nan_weights`` sets the output layer's weights to NaN (the
    version loads and answers, with NaN scores); ``input_width`` gives the network that many inputs while
    its metadata and warm-up requests declare ``feature_names`` (an export bug: the warm-up fails).
    """
    names = tuple(feature_names)
    fhash = feature_hash or feature_list_hash(names)
    module = _FraudDnn(names=names, feature_hash=fhash, seed=version if seed is None else seed, hidden=hidden,
                       width=input_width)
    if nan_weights:
        module.w2.assign(tf.fill(module.w2.shape, np.float32("nan")))
    n_inputs = len(names) if input_width is None else input_width
    spec = tf.TensorSpec([None, n_inputs], tf.float32, "features")
    serve = tf.function(module.serve, input_signature=[spec])
    metadata = tf.function(module.metadata, input_signature=[])
    model_dir = repo / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve, "metadata": metadata})
    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    info: dict[str, Any] = {
        "model_name": model_name,
        "version": version,
        "version_tag": f"test-{version}",
        "feature_list": {"name": "test", "names": list(names), "hash": fhash},
        "metrics": {},
        "reference": {},
    }
    (extra / "fraudstream_metadata.json").write_text(json.dumps(info, indent=2))
    _write_warmup(extra / "tf_serving_warmup_requests", model_name, len(names))
    final = model_dir / str(version)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def _write_warmup(path: Path, model_name: str, n_features: int) -> None:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
    )
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(np.zeros((1, n_features), np.float32)))
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(log.SerializeToString())


def write_labels(model_dir: Path, labels: Mapping[str, int]) -> None:
    """Replace ``labels.json`` atomically so a poller never reads half a file."""
    tmp = model_dir / f".labels-{os.getpid()}.json"
    tmp.write_text(json.dumps(dict(labels)))
    tmp.replace(model_dir / "labels.json")


def sample_features(n: int, *, n_features: int = len(DEFAULT_FEATURES), seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, n_features)).astype(np.float32)
