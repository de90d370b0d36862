"""Gradient-boosted trees as a Keras layer of standard TensorFlow ops, so one SavedModel serves them.

The trees are fitted by scikit-learn's ``HistGradientBoostingClassifier`` (a dependency already) on the
model's *normalised* inputs (the output of the ``preprocess`` model, float32), then copied into
``BoostedTrees``: per tree, flat arrays of split feature, threshold, children and leaf value, walked for
all rows and trees at once with ``gather`` / ``where`` as many steps as the deepest tree is deep. Leaves
point to themselves, so rows that reached a leaf stay there. TensorFlow Serving, the local SavedModel
backend and TFLite run these ops as they are: no custom op (TensorFlow Decision Forests, whose op would
need a TF Serving build of its own, has no release for TensorFlow 2.21).

Exactness: scikit-learn compares float64 thresholds with the (float32) inputs; a float32 ``v`` satisfies
``v <= t`` exactly when ``v <= t32``, ``t32`` the largest float32 not above ``t``, so the layer compares
in float32 against ``t32`` and takes the same path as scikit-learn for every row. Only the sum of leaf
values is float32 here (float64 there): scores agree to ~1e-7.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import numpy.typing as npt


@keras.saving.register_keras_serializable(package="fraudstream")
class BoostedTrees(keras.layers.Layer):  # type: ignore[misc]
    """Sum of tree outputs (a logit) for rows of features; arrays of shape (trees, nodes)."""

    def __init__(
        self,
        feature: Any,
        threshold: Any,
        left: Any,
        right: Any,
        value: Any,
        missing_left: Any,
        baseline: float,
        depth: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.arrays = {
            "feature": np.asarray(feature, np.int32),
            "threshold": np.asarray(threshold, np.float32),
            "left": np.asarray(left, np.int32),
            "right": np.asarray(right, np.int32),
            "value": np.asarray(value, np.float32),
            "missing_left": np.asarray(missing_left, bool),
        }
        self.baseline = float(baseline)
        self.depth = int(depth)
        self.n_trees, self.n_nodes = self.arrays["feature"].shape

    def build(self, input_shape: Any) -> None:
        # Flattened, with each tree's nodes at offset tree * n_nodes: one gather per step for all trees.
        offsets = (np.arange(self.n_trees, dtype=np.int32) * self.n_nodes)[:, None]
        flat = {
            "feature": self.arrays["feature"],
            "threshold": self.arrays["threshold"],
            "left": self.arrays["left"] + offsets,
            "right": self.arrays["right"] + offsets,
            "value": self.arrays["value"],
            "missing_left": self.arrays["missing_left"].astype(np.int32),
        }
        for name, array in flat.items():
            weight = self.add_weight(
                name=name,
                shape=(array.size,),
                dtype="float32" if array.dtype == np.float32 else "int32",
                initializer=keras.initializers.Constant(array.reshape(-1)),
                trainable=False,
            )
            setattr(self, f"_{name}", weight)
        self.roots = offsets.reshape(-1)

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        x = tf.convert_to_tensor(inputs, tf.float32)
        rows = tf.shape(x)[0]
        node = tf.tile(tf.constant(self.roots)[None, :], [rows, 1])  # (rows, trees): flat node indices
        for _ in range(self.depth):
            value = tf.gather(x, tf.gather(self._feature, node), batch_dims=1)
            left = (value <= tf.gather(self._threshold, node)) | (
                tf.math.is_nan(value) & (tf.gather(self._missing_left, node) == 1)
            )
            node = tf.where(left, tf.gather(self._left, node), tf.gather(self._right, node))
        logit = self.baseline + tf.reduce_sum(tf.gather(self._value, node), axis=1, keepdims=True)
        return logit

    def get_config(self) -> dict[str, Any]:
        arrays = {k: v.tolist() for k, v in self.arrays.items()}
        return {**super().get_config(), **arrays, "baseline": self.baseline, "depth": self.depth}


def float32_at_most(threshold: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    """The largest float32 not above each threshold (``v <= t`` ⇔ ``v <= result`` for float32 ``v``)."""
    t32 = threshold.astype(np.float32)
    above = t32.astype(np.float64) > threshold
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def layer_from_sklearn(model: Any, name: str = "boosted_trees") -> BoostedTrees:
    """A ``BoostedTrees`` layer computing ``model``'s raw (logit) prediction; binary classifiers only.

    Reads the fitted trees (``_predictors``: one ``TreePredictor`` per iteration, its ``nodes`` record
    array) and ``_baseline_prediction``; a test compares the layer with ``decision_function`` so a change
    of these scikit-learn internals fails loudly.
    """
    trees = [predictors[0].nodes for predictors in model._predictors]
    if any(nodes["is_categorical"].any() for nodes in trees):
        msg = "categorical splits are not supported"
        raise ValueError(msg)
    n_nodes = max(len(nodes) for nodes in trees)
    shape = (len(trees), n_nodes)
    feature = np.zeros(shape, np.int32)
    threshold = np.zeros(shape, np.float32)
    # Padding and leaves point to themselves.
    left = np.tile(np.arange(n_nodes, dtype=np.int32), (len(trees), 1))
    right = left.copy()
    value = np.zeros(shape, np.float32)
    missing_left = np.zeros(shape, bool)
    depth = 0
    for t, nodes in enumerate(trees):
        inner = np.flatnonzero(nodes["is_leaf"] == 0)
        leaves = np.flatnonzero(nodes["is_leaf"] == 1)
        feature[t, inner] = nodes["feature_idx"][inner]
        threshold[t, inner] = float32_at_most(nodes["num_threshold"][inner])
        left[t, inner] = nodes["left"][inner]
        right[t, inner] = nodes["right"][inner]
        missing_left[t, inner] = nodes["missing_go_to_left"][inner] == 1
        value[t, leaves] = nodes["value"][leaves]
        depth = max(depth, int(nodes["depth"].max()))
    baseline = float(np.asarray(model._baseline_prediction).reshape(-1)[0])
    return BoostedTrees(feature, threshold, left, right, value, missing_left, baseline, depth, name=name)
