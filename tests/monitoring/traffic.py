"""Simulated traffic for the drift tests, with its features computed by the offline engine, and a tiny
model normalised on a "training" sample so its scores are spread (the shared test model saturates at 1.0
on raw feature values, which would leave nothing to drift).

The training sample is another seed of the same simulator over the same clock span: the same population
law, so live normal traffic is close to it (PSI a few hundredths) while the shifted tail is far from it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import tensorflow as tf

from features import FEATURE_LIST
from features.offline import compute_offline
from features.simulator import SimulatedTransaction, SimulationConfig, Simulator

# Private helpers of the shared test model factory: the same module and warm-up file, only with the
# normalisation set from data.
from scoring.testing.model_factory import _FraudDnn, _write_warmup
from tests.monitoring.fixtures import SCORE_EDGES, histogram, quantile_edges

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Traffic:
    transactions: list[SimulatedTransaction]
    features: F64


def simulate(*, count: int, seed: int, end: datetime, shift_after: int | None = None, prefix: str = "sim",
             cards: int = 2000) -> Traffic:
    config = SimulationConfig(count=count, seed=seed, shift_after=shift_after, end=end, id_prefix=prefix,
                              cards=cards)
    txs = list(Simulator(config).transactions())
    for t in txs:
        # Ids of this run only: other tests in the session feed the same Redis, and terminal state is
        # keyed by the clear terminal id, so shared ids would make "normal" traffic drift.
        t.payload["card_id"] = f"{prefix}-{t.payload['card_id']}"
        t.payload["terminal_id"] = f"{prefix}-{t.payload['terminal_id']}"
    frame = pd.DataFrame({
        "transaction_id": [t.payload["transaction_id"] for t in txs],
        "card_ref": [t.payload["card_id"] for t in txs],
        "terminal_id": [t.payload["terminal_id"] for t in txs],
        "event_time": [t.event_time for t in txs],
        "amount": [t.payload["amount"] for t in txs],
    })
    return Traffic(txs, compute_offline(frame))


def records(txs: list[SimulatedTransaction], topic: str) -> list[tuple[str, bytes, bytes]]:
    return [(topic, str(t.payload["card_id"]).encode(), orjson.dumps(t.payload)) for t in txs]


def export_trained_model(repo: Path, training: F64, *, version: int = 1, seed: int = 1,
                         review_share: float | None = None) -> tuple[Path, F64]:
    """Export a version normalised on ``training`` with its drift reference, as training/export.py
    writes it; returns the version directory and the training scores. With ``review_share`` the model
    looks more like a trained one: no weight on features constant in ``training``, and the output layer
    scaled so that this share of the training rows scores above 0.5 (the default review threshold), most
    rows low."""
    names = FEATURE_LIST.names
    module = _FraudDnn(names=names, feature_hash=FEATURE_LIST.hash, seed=seed, hidden=32)
    module.mean.assign(training.mean(axis=0).astype(np.float32))
    module.std.assign(np.maximum(training.std(axis=0), 1e-3).astype(np.float32))
    if review_share is not None:
        # A trained model puts (almost) no weight on a feature that never varied in its training data
        # (here: geo velocity, as the sample has no coordinates, and the label-based features).
        constant = training.std(axis=0) < 1e-9
        module.w1.assign(np.where(constant[:, None], 0.0, module.w1.numpy()).astype(np.float32))
        z = tf.constant(((training - module.mean.numpy()) / module.std.numpy()).astype(np.float32))
        logits = (module._logit(z) - module.b2).numpy()
        scale = 1.6 / max(float(logits.std()), 1e-6)
        module.w2.assign(module.w2 * scale)
        module.b2.assign(np.float32(-np.quantile(logits * scale, 1.0 - review_share)))
    scores = module.serve(tf.constant(training.astype(np.float32)))["score"].numpy().astype(np.float64)
    spec = tf.TensorSpec([None, len(names)], tf.float32, "features")
    signatures = {"serving_default": tf.function(module.serve, input_signature=[spec]),
                  "metadata": tf.function(module.metadata, input_signature=[])}
    model_dir = repo / "fraud_dnn"
    tmp = model_dir / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures=signatures)
    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    features = {}
    for j, name in enumerate(names):
        column = training[:, j]
        if np.unique(column).size > 1:  # a constant column has no distribution to drift from
            features[name] = histogram(column, quantile_edges(column))
    info = {
        "model_name": "fraud_dnn", "version": version, "version_tag": f"drift-test-{version}",
        "feature_list": {"name": FEATURE_LIST.name, "names": list(names), "hash": FEATURE_LIST.hash},
        "metrics": {},
        "reference": {"score_histogram": histogram(scores, SCORE_EDGES), "features": features},
    }
    (extra / "fraudstream_metadata.json").write_text(json.dumps(info))
    _write_warmup(extra / "tf_serving_warmup_requests", "fraud_dnn", len(names))
    final = model_dir / str(version)
    tmp.rename(final)
    return final, scores
