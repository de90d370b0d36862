"""Boosted trees as standard TensorFlow ops: same scores as scikit-learn, blended and exported in one model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from sklearn.ensemble import HistGradientBoostingClassifier

from tests.fixtures.training import START, TINY
from training.dataset import History, make_fold
from training.export import Holdout, export_version
from training.model import train_model
from training.trees import BoostedTrees, float32_at_most, layer_from_sklearn


def _booster() -> tuple[HistGradientBoostingClassifier, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 6)).astype(np.float32)
    x[::37, 2] = np.nan  # missing values take the side scikit-learn learnt for them
    y = ((x[:, 0] > 0.3) ^ (np.nan_to_num(x[:, 2], nan=1.0) * x[:, 1] > 0.5)).astype(int)
    return HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(x, y), x


def test_layer_matches_scikit_learn_decision_function() -> None:
    booster, x = _booster()
    layer = layer_from_sklearn(booster)
    got = np.asarray(layer(x)).reshape(-1)
    np.testing.assert_allclose(got, booster.decision_function(x), atol=1e-5)
    assert layer.n_trees == booster.n_iter_


def test_thresholds_round_down_to_float32_so_every_row_takes_scikit_learns_path() -> None:
    t = np.array([0.1, 1.0, -0.3, 1e-40, 2.5000000001], np.float64)
    t32 = float32_at_most(t)
    assert (t32.astype(np.float64) <= t).all()
    assert (np.nextafter(t32, np.float32(np.inf)).astype(np.float64) > t).all()


def test_layer_survives_keras_serialisation(tmp_path: Path) -> None:
    booster, x = _booster()
    inp = keras.Input((6,))
    model = keras.Model(inp, layer_from_sklearn(booster)(inp))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", custom_objects={"BoostedTrees": BoostedTrees})
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-7)


def test_blended_model_is_one_saved_model_with_the_trees_inside(history: History, tmp_path: Path) -> None:
    fold = make_fold(history, START)
    x, y = history.features[fold.train_idx], history.y[fold.train_idx]
    config = replace(TINY, trees=True, tree_max_iter=20, tree_weight=0.5)
    blended = train_model(history.spec, x, y, config, validation=(x[:200], y[:200]), verbose=False)
    dnn = train_model(history.spec, x, y, TINY, verbose=False)
    probe = history.features[fold.test_idx][:50]
    z = blended.preprocess.predict(probe.astype(np.float32), verbose=0)
    tree_logit = np.asarray(blended.head.get_layer("boosted_trees")(z)).reshape(-1)
    p_dnn = np.clip(dnn.predict(probe), 1e-12, 1 - 1e-12)
    # same seed, same data: the DNN member is the plain DNN, and the score blends the two logits 50/50
    expected = 1.0 / (1.0 + np.exp(-(0.5 * np.log(p_dnn / (1 - p_dnn)) + 0.5 * tree_logit)))
    np.testing.assert_allclose(blended.predict(probe), expected, atol=1e-5)
    assert 0 < blended.tree_rounds <= 20
    holdout = Holdout(probe, history.y[fold.test_idx][:50], history.cards[fold.test_idx][:50],
                      history.day[fold.test_idx][:50])
    path, metadata = export_version(
        blended, tmp_path / "fraud_dnn", 1, training_window={}, metrics={}, x_train=x, holdout=holdout
    )
    served = tf.saved_model.load(str(path)).signatures["serving_default"](features=tf.constant(probe, tf.float32))
    np.testing.assert_allclose(served["score"].numpy(), blended.predict(probe), atol=1e-6)
    assert metadata["model_config"]["trees"] is True
    assert "tflite" in metadata


def test_one_class_training_rows_give_a_dnn_only_model(history: History) -> None:
    fold = make_fold(history, START)
    x = history.features[fold.train_idx]
    trained = train_model(history.spec, x, np.zeros(len(x), np.int8), replace(TINY, trees=True), verbose=False)
    assert trained.tree_rounds == 0
    assert not [layer for layer in trained.head.layers if isinstance(layer, BoostedTrees)]
    assert trained.predict(x[:5]).shape == (5,)


def test_without_validation_rows_the_trees_hold_out_their_own(history: History) -> None:
    fold = make_fold(history, START)
    x, y = history.features[fold.train_idx], history.y[fold.train_idx]
    trained = train_model(history.spec, x, y, replace(TINY, trees=True, tree_patience=2), verbose=False)
    assert 0 < trained.tree_rounds < TINY.tree_max_iter
