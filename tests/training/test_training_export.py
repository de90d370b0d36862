from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tests.fixtures.training import START
from training.dataset import History, make_fold
from training.export import METADATA_FILE, TFLITE_FILE, WARMUP_FILE, Holdout, export_version
from training.model import TrainedModel, log_mask, signed_log1p


def test_normalisation_lives_inside_the_model(trained: TrainedModel, history: History) -> None:
    fold = make_fold(history, START)
    x = history.features[fold.train_idx]
    z = trained.preprocess.predict(x.astype(np.float32), verbose=0)
    # Adapted on the training set: the transformed training columns come out standardised.
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=0.05)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.05)
    expected = signed_log1p(x, log_mask(x))
    expected = (expected - expected.mean(axis=0)) / expected.std(axis=0)
    np.testing.assert_allclose(z, expected, atol=1e-3)


@pytest.fixture(scope="module")
def exported(trained: TrainedModel, history: History, tmp_path_factory: pytest.TempPathFactory) -> Path:
    fold = make_fold(history, START)
    holdout = Holdout(
        history.features[fold.test_idx],
        history.y[fold.test_idx],
        history.cards[fold.test_idx],
        history.day[fold.test_idx],
    )
    model_dir = tmp_path_factory.mktemp("repo") / "fraud_dnn"
    path, _ = export_version(
        trained,
        model_dir,
        1,
        training_window=fold.window(),
        metrics={"auc_roc": 0.9},
        x_train=history.features[fold.train_idx],
        holdout=holdout,
    )
    return path


def test_layout_and_signatures(exported: Path, trained: TrainedModel, history: History) -> None:
    assert exported.name == "1" and (exported / "saved_model.pb").exists()
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".tmp")]
    loaded = tf.saved_model.load(str(exported))
    assert set(loaded.signatures) == {"serving_default", "metadata"}
    serve = loaded.signatures["serving_default"]
    spec = serve.structured_input_signature[1]["features"]
    assert spec.dtype == tf.float32 and spec.shape.as_list() == [None, 3]
    x = history.features[:5].astype(np.float32)
    out = serve(features=tf.constant(x))
    assert out["score"].shape == (5,) and out["score"].dtype == tf.float32
    assert out["contributions"].shape == (5, 3)
    # Raw vector in: the SavedModel's scores equal the Keras model's on unnormalised features.
    np.testing.assert_allclose(out["score"].numpy(), trained.predict(x), atol=1e-5)
    # Contributions are gradient (of the logit) × normalised input.
    assert trained.logit_head is not None
    z = tf.constant(trained.preprocess(x, training=False))
    with tf.GradientTape() as tape:
        tape.watch(z)
        s = tf.reshape(trained.logit_head(z, training=False), [-1])
    np.testing.assert_allclose(out["contributions"].numpy(), (tape.gradient(s, z) * z).numpy(), atol=1e-5)
    # A saturated score (probability 1.0 in float32) still gets reason codes.
    extreme = np.array([[1e7, 12.0, 1e4]], np.float32)
    hot = serve(features=tf.constant(extreme))
    assert np.abs(hot["contributions"].numpy()).sum() > 0
    meta = loaded.signatures["metadata"]()
    assert meta["feature_list_hash"].numpy().decode() == "stand-in-hash"
    assert [n.decode() for n in meta["feature_names"].numpy()] == ["amount", "hour", "card_count"]


def test_warmup_records_are_prediction_logs(exported: Path) -> None:
    records = list(tf.data.TFRecordDataset(str(exported / "assets.extra" / WARMUP_FILE)).as_numpy_iterator())
    assert len(records) >= 2
    for raw in records:
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        request = log.predict_log.request
        assert request.model_spec.name == "fraud_dnn"
        assert request.model_spec.signature_name == "serving_default"
        tensor = tf.make_ndarray(request.inputs["features"])
        assert tensor.dtype == np.float32 and tensor.shape[1] == 3


def test_an_exported_version_passes_the_serving_checks(exported: Path) -> None:
    """What the trainer writes passes the warm-up and hash checks of the hot reload and ``models promote``."""
    from scoring.local import vet_version

    model = vet_version(exported, expected_feature_hash="stand-in-hash")
    assert model.version == 1 and model.feature_list_hash == "stand-in-hash"


def test_metadata_and_tflite(exported: Path) -> None:
    meta = json.loads((exported / "assets.extra" / METADATA_FILE).read_text())
    assert meta["model_name"] == "fraud_dnn" and meta["version"] == 1 and meta["version_tag"] == "v1"
    assert meta["feature_list"] == {
        "name": "stand_in",
        "names": ["amount", "hour", "card_count"],
        "hash": "stand-in-hash",
    }
    assert {"start", "end"} <= set(meta["training_window"])
    hist = meta["reference"]["score_histogram"]
    assert len(hist["edges"]) == len(hist["counts"]) + 1
    assert set(meta["reference"]["features"]) == {"amount", "hour", "card_count"}
    assert meta["created_at"].endswith("+00:00")
    assert (exported / "assets.extra" / TFLITE_FILE).stat().st_size > 0
    assert set(meta["tflite"]["metric_diff"]) == {"auc_roc", "average_precision", "card_precision_at_100"}
    # Calibrated int8 stays close to the float model (a broken quantisation gives a constant score).
    assert meta["tflite"]["max_abs_score_diff"] < 0.1
    assert len(meta["tflite"]["preprocessing"]["mean"]) == 3


def test_existing_version_is_never_overwritten(exported: Path, trained: TrainedModel, history: History) -> None:
    from training.errors import ExportError

    with pytest.raises(ExportError):
        export_version(
            trained,
            exported.parent,
            1,
            training_window={},
            metrics={},
            x_train=history.features[:50],
            tflite=False,
        )


def test_ensemble_is_one_model_averaging_its_members(history: History, tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.fixtures.training import TINY
    from training.model import train_model

    fold = make_fold(history, START)
    x, y = history.features[fold.train_idx], history.y[fold.train_idx]
    singles = [train_model(history.spec, x, y, replace(TINY, seed=TINY.seed + i), verbose=False) for i in (0, 1)]
    ensemble = train_model(history.spec, x, y, replace(TINY, ensemble=2), verbose=False)
    probe = history.features[:20]
    expected = np.mean([m.predict(probe) for m in singles], axis=0)
    np.testing.assert_allclose(ensemble.predict(probe), expected, atol=1e-5)
    path, _ = export_version(
        ensemble, tmp_path / "fraud_dnn", 1, training_window={}, metrics={}, x_train=x, tflite=False
    )
    served = tf.saved_model.load(str(path)).signatures["serving_default"](features=tf.constant(probe, tf.float32))
    np.testing.assert_allclose(served["score"].numpy(), expected, atol=1e-5)
    assert served["contributions"].shape == (20, 3)
