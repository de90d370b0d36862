"""The fraud DNN: raw feature vector in, fraud probability out, preprocessing inside the model.

``preprocess`` (signed log1p on heavy-tailed non-negative columns, then a ``Normalization`` whose mean and
variance come from the training set) and ``head`` (the dense layers) are two Keras models chained into
``model``; export needs them apart because reason codes are gradient × *normalised* input.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import keras
import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score

from training.dataset import FeatureSpec, make_tf_dataset
from training.distribute import fit_multi_worker, is_multi_worker

ClassWeighting = Literal["none", "sqrt", "balanced"]
LossKind = Literal["bce", "focal"]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 256
    epochs: int = 20
    patience: int = 4
    """Epochs without a better validation average precision before stopping."""
    class_weighting: ClassWeighting = "sqrt"
    log_transform: bool = True
    validation_fraction: float = 0.2
    seed: int = 42
    ensemble: int = 3
    """Members trained with seeds ``seed, seed+1, …`` and averaged inside the one exported model."""
    loss: LossKind = "bce"
    """``focal`` down-weights rows the model already gets right (Lin et al. 2017), ``focal_gamma`` how much."""
    focal_gamma: float = 2.0
    trees: bool = True
    """Also fit gradient-boosted trees on the normalised inputs and blend them into the one exported model."""
    tree_weight: float = 0.5
    """Share of the trees' logit in the score's logit (the DNN members' mean logit has the rest)."""
    tree_learning_rate: float = 0.05
    tree_max_leaf_nodes: int = 31
    tree_max_iter: int = 1000
    tree_l2_regularization: float = 1.0
    tree_patience: int = 30
    """Boosting rounds without a lower validation log-loss before stopping (same validation rows as the DNN)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@keras.saving.register_keras_serializable(package="fraudstream")
class SignedLog1p(keras.layers.Layer):  # type: ignore[misc]
    """``sign(x)·log1p(|x|)`` on the masked columns; counts and amounts span decades, rates do not."""

    def __init__(self, mask: Sequence[bool], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mask_values = [bool(m) for m in mask]

    def build(self, input_shape: Any) -> None:
        self.mask = self.add_weight(
            name="mask",
            shape=(len(self.mask_values),),
            initializer=keras.initializers.Constant(np.array(self.mask_values, dtype=np.float32)),
            trainable=False,
        )

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        # log(1 + |x|) rather than log1p: TFLite has LOG but no LOG1P kernel.
        logged = ops.sign(inputs) * ops.log(1.0 + ops.abs(inputs))
        return self.mask * logged + (1.0 - self.mask) * inputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mask": self.mask_values}


def log_mask(x: npt.NDArray[np.floating[Any]]) -> list[bool]:
    """Columns to log-transform: non-negative with values above 1 (counts, amounts; not flags or rates)."""
    return [bool(np.nanmin(col) >= 0 and np.nanmax(col) > 1) for col in x.T]


def signed_log1p(x: npt.NDArray[np.floating[Any]], mask: Sequence[bool]) -> npt.NDArray[np.float64]:
    out = np.asarray(x, dtype=np.float64).copy()
    cols = np.asarray(mask, dtype=bool)
    out[:, cols] = np.sign(out[:, cols]) * np.log1p(np.abs(out[:, cols]))
    return out


@dataclass
class TrainedModel:
    model: keras.Model
    preprocess: keras.Model
    head: keras.Model
    spec: FeatureSpec
    config: ModelConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    train_seconds: float = 0.0
    train_rows: int = 0
    logit_head: keras.Model | None = None
    """Normalised input → logit (mean of the DNN members' logits); reason codes use it (trees have no
    gradient, so contributions explain the DNN part of a blended score)."""
    tree_rounds: int = 0
    tree_seconds: float = 0.0

    def predict(self, x: npt.NDArray[np.floating[Any]], batch_size: int = 8192) -> npt.NDArray[np.float64]:
        out = self.model.predict(np.asarray(x, np.float32), batch_size=batch_size, verbose=0)
        return np.asarray(out, dtype=np.float64).reshape(-1)


def build_model(
    spec: FeatureSpec, x_train: npt.NDArray[np.floating[Any]], config: ModelConfig
) -> tuple[keras.Model, keras.Model, keras.Model, keras.Model]:
    """Untrained ``(model, preprocess, head, logit_head)``; normalisation statistics from ``x_train``."""
    n_features = len(spec.names)
    mask = log_mask(x_train) if config.log_transform else [False] * n_features
    transformed = signed_log1p(x_train, mask)
    variance = np.maximum(transformed.var(axis=0), 1e-6)  # constant columns must not divide by zero

    raw = keras.Input(shape=(n_features,), name="features", dtype="float32")
    z = SignedLog1p(mask, name="signed_log1p")(raw)
    z = keras.layers.Normalization(mean=transformed.mean(axis=0), variance=variance, name="normalise")(z)
    preprocess = keras.Model(raw, z, name="preprocess")

    z_in = keras.Input(shape=(n_features,), name="normalised", dtype="float32")
    h = z_in
    for i, width in enumerate(config.hidden):
        h = keras.layers.Dense(width, activation="relu", name=f"dense_{i}")(h)
        if config.dropout > 0:
            h = keras.layers.Dropout(config.dropout, seed=config.seed + i, name=f"dropout_{i}")(h)
    # Logit and sigmoid as separate layers: reason codes differentiate the logit, whose gradient does not
    # vanish when the probability saturates at 1 (the riskiest rows are the ones that need explaining).
    logit = keras.layers.Dense(1, name="logit")(h)
    out = keras.layers.Activation("sigmoid", name="score")(logit)
    # Ensemble members live side by side in one model, and Keras needs unique sub-model names.
    suffix = "" if config.ensemble <= 1 and not config.trees else f"_seed_{config.seed}"
    head = keras.Model(z_in, out, name=f"head{suffix}")
    logit_head = keras.Model(z_in, logit, name=f"logit_head{suffix}")

    model = keras.Model(raw, head(preprocess(raw)), name="fraud_dnn")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss=make_loss(config),
        weighted_metrics=[],
    )
    return model, preprocess, head, logit_head


def make_loss(config: ModelConfig, reduction: str | None = "sum_over_batch_size") -> keras.losses.Loss:
    if config.loss == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=config.focal_gamma, reduction=reduction)
    return keras.losses.BinaryCrossentropy(reduction=reduction)


def sample_weights(y: npt.NDArray[np.integer[Any]], weighting: ClassWeighting) -> npt.NDArray[np.float64]:
    """Per-row weights for the rare class: ``balanced`` = n_neg/n_pos, ``sqrt`` its square root (gentler)."""
    pos = max(int(y.sum()), 1)
    ratio = (len(y) - pos) / pos
    w_pos = {"none": 1.0, "sqrt": float(np.sqrt(ratio)), "balanced": float(ratio)}[weighting]
    return np.where(y == 1, w_pos, 1.0)


class ValidationAveragePrecision(keras.callbacks.Callback):  # type: ignore[misc]
    """Early stopping on the exact (scikit-learn) average precision of a validation set; keeps the best."""

    def __init__(self, x_val: npt.NDArray[np.float32], y_val: npt.NDArray[np.int8], patience: int) -> None:
        super().__init__()
        self.x_val, self.y_val, self.patience = x_val, y_val, patience
        self.best = -1.0
        self.best_epoch = 0
        self.best_weights: list[Any] | None = None
        self.values: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        scores = self.model.predict(self.x_val, batch_size=8192, verbose=0).reshape(-1)
        ap = float(average_precision_score(self.y_val, scores))
        self.values.append(ap)
        if logs is not None:
            logs["val_average_precision"] = ap
        if ap > self.best:
            self.best, self.best_epoch, self.best_weights = ap, epoch + 1, self.model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ScalarEventLog(keras.callbacks.Callback):  # type: ignore[misc]
    """Per-epoch scalars as TensorBoard event files (``tensorboard --logdir <run>/tensorboard``).

    Keras' own TensorBoard callback needs the ``tensorboard`` package at training time; this writes the
    same scalar events through ``tf.summary.write`` with the scalars plugin tag, so only viewing needs it.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__()
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._writer = tf.summary.create_file_writer(log_dir)
        self._metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        tf = self._tf
        with self._writer.as_default():
            for key, value in (logs or {}).items():
                if isinstance(value, (int, float)):
                    tf.summary.write(f"epoch_{key}", tf.constant(float(value)), step=epoch, metadata=self._metadata)
        self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._writer.close()


class _Progress(keras.callbacks.Callback):  # type: ignore[misc]
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in (logs or {}).items() if isinstance(v, float))
        print(f"  epoch {epoch + 1}: {shown}", file=sys.stderr, flush=True)


def _train_single(
    spec: FeatureSpec,
    x: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.integer[Any]],
    config: ModelConfig,
    *,
    validation: tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.int8]] | None = None,
    strategy: Any = None,
    log_dir: str | None = None,
    verbose: bool = True,
    steps_per_epoch: int | None = None,
) -> TrainedModel:
    keras.utils.set_random_seed(config.seed)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model, preprocess, head, logit_head = build_model(spec, x, config)
    weights = sample_weights(np.asarray(y), config.class_weighting)
    ds = make_tf_dataset(
        np.asarray(x), np.asarray(y), config.batch_size, shuffle=True, seed=config.seed, sample_weight=weights
    )
    if steps_per_epoch is not None:
        # Multi-worker runs need a known, equal step count per worker; repeating keeps every worker fed.
        ds = ds.repeat()
    callbacks: list[keras.callbacks.Callback] = []
    stopper = None
    if validation is not None:
        stopper = ValidationAveragePrecision(validation[0].astype(np.float32), validation[1], config.patience)
        callbacks.append(stopper)
    if log_dir is not None:
        callbacks.append(ScalarEventLog(log_dir))
    if verbose:
        callbacks.append(_Progress())
    started = time.perf_counter()
    if strategy is not None and is_multi_worker(strategy):
        # Keras 3's fit() cannot reduce its scalar logs under the collective strategy (it reduces along
        # axis 0 of a scalar), so multi-worker runs use a plain synchronous loop; no early stopping there.
        steps = steps_per_epoch or max(1, len(x) // config.batch_size)
        history = fit_multi_worker(
            model,
            ds if steps_per_epoch else ds.repeat(),
            strategy,
            epochs=config.epochs,
            steps_per_epoch=steps,
            global_batch=config.batch_size,
            loss_fn=make_loss(config, reduction=None),
        )
    else:
        fit = model.fit(
            ds, epochs=config.epochs, callbacks=callbacks, verbose=0, shuffle=False, steps_per_epoch=steps_per_epoch
        )
        history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    elapsed = time.perf_counter() - started
    return TrainedModel(
        model=model,
        preprocess=preprocess,
        head=head,
        logit_head=logit_head,
        spec=spec,
        config=config,
        history=history,
        best_epoch=stopper.best_epoch if stopper else len(history.get("loss", [])),
        train_seconds=elapsed,
        train_rows=len(x),
    )


def train_model(
    spec: FeatureSpec,
    x: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.integer[Any]],
    config: ModelConfig,
    *,
    validation: tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.int8]] | None = None,
    strategy: Any = None,
    log_dir: str | None = None,
    verbose: bool = True,
    steps_per_epoch: int | None = None,
) -> TrainedModel:
    """Fit a model on ``(x, y)``; with ``validation`` it stops early on validation average precision.

    With ``config.ensemble > 1`` the members share the preprocessing (same training-set statistics) and
    the exported head averages their scores, so serving still makes one call on one raw vector.
    """
    members = []
    for i in range(max(1, config.ensemble)):
        member_config = replace(config, seed=config.seed + i)
        member_log = f"{log_dir}/member-{i}" if log_dir and config.ensemble > 1 else log_dir
        if verbose and config.ensemble > 1:
            print(f"  ensemble member {i + 1}/{config.ensemble}", file=sys.stderr, flush=True)
        members.append(
            _train_single(
                spec,
                x,
                y,
                member_config,
                validation=validation,
                strategy=strategy,
                log_dir=member_log,
                verbose=verbose,
                steps_per_epoch=steps_per_epoch,
            )
        )
    if len(members) == 1 and not config.trees:
        return members[0]
    preprocess = members[0].preprocess
    trees, rounds, tree_seconds = None, 0, 0.0
    if config.trees:
        trees, rounds, tree_seconds = fit_trees(preprocess, x, y, validation, config, verbose=verbose)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        z_in = keras.Input(shape=(len(spec.names),), name="normalised", dtype="float32")
        logit_members = [m.logit_head(z_in) for m in members if m.logit_head is not None]
        logit = logit_members[0]
        if len(logit_members) > 1:
            logit = keras.layers.Average(name="ensemble_logit")(logit_members)
        logit_head = keras.Model(z_in, logit, name="logit_head")
        if trees is None:
            scores = [m.head(z_in) for m in members]
            score = scores[0] if len(scores) == 1 else keras.layers.Average(name="ensemble_mean")(scores)
        else:
            # Log-odds blend: a confident member moves the score more than an average of probabilities
            # lets it (measured on the selection folds, docs/benchmarks.md).
            blended = keras.layers.Add(name="blend")(
                [
                    keras.layers.Rescaling(1.0 - config.tree_weight, name="dnn_share")(logit),
                    keras.layers.Rescaling(config.tree_weight, name="tree_share")(trees(z_in)),
                ]
            )
            score = keras.layers.Activation("sigmoid", name="blend_score")(blended)
        head = keras.Model(z_in, score, name="head")
        raw = keras.Input(shape=(len(spec.names),), name="features", dtype="float32")
        model = keras.Model(raw, head(preprocess(raw)), name="fraud_dnn")
    history: dict[str, list[float]] = {}
    for i, m in enumerate(members):
        history.update({f"member_{i}_{k}": v for k, v in m.history.items()})
    return TrainedModel(
        model=model,
        preprocess=preprocess,
        head=head,
        logit_head=logit_head,
        spec=spec,
        config=config,
        history=history,
        best_epoch=max(m.best_epoch for m in members),
        train_seconds=sum(m.train_seconds for m in members) + tree_seconds,
        train_rows=len(x),
        tree_rounds=rounds,
        tree_seconds=tree_seconds,
    )


def fit_trees(
    preprocess: keras.Model,
    x: npt.NDArray[np.floating[Any]],
    y: npt.NDArray[np.integer[Any]],
    validation: tuple[npt.NDArray[np.floating[Any]], npt.NDArray[np.int8]] | None,
    config: ModelConfig,
    *,
    verbose: bool = True,
) -> tuple[keras.layers.Layer | None, int, float]:
    """Gradient-boosted trees on the normalised rows (what the layer sees when serving); early stopping
    on the validation rows' log-loss. Returns the ``BoostedTrees`` layer (None when the rows hold one
    class only: nothing to split on), its rounds and fit seconds."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from training.dataset import split_validation
    from training.trees import layer_from_sklearn

    if len(np.unique(y)) < 2:
        if verbose:
            print("  boosted trees skipped: the training rows hold one class", file=sys.stderr, flush=True)
        return None, 0, 0.0
    if validation is None:
        fit_pos, val_pos = split_validation(np.asarray(y, np.int8), config.validation_fraction, config.seed)
        if len(val_pos) and len(np.unique(np.asarray(y)[fit_pos])) == 2:
            x, y, validation = x[fit_pos], np.asarray(y)[fit_pos], (x[val_pos], np.asarray(y, np.int8)[val_pos])

    def normalised(rows: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        # Called eagerly, not through predict(): under a multi-worker strategy predict() would be a
        # collective step; this is the same layer arithmetic the serving graph runs.
        x32 = np.asarray(rows, np.float32)
        parts = [np.asarray(preprocess(x32[i : i + 65_536], training=False)) for i in range(0, len(x32), 65_536)]
        return np.concatenate(parts).astype(np.float32) if parts else np.empty((0, x32.shape[1]), np.float32)

    booster = HistGradientBoostingClassifier(
        learning_rate=config.tree_learning_rate,
        max_iter=config.tree_max_iter,
        max_leaf_nodes=config.tree_max_leaf_nodes,
        l2_regularization=config.tree_l2_regularization,
        # early stopping on the DNN's validation rows; without any (too few rows), a fixed number of rounds
        early_stopping=validation is not None,
        scoring="loss",
        n_iter_no_change=config.tree_patience,
        validation_fraction=None,
        random_state=config.seed,
    )
    started = time.perf_counter()
    if validation is not None:
        booster.fit(normalised(x), np.asarray(y), X_val=normalised(validation[0]), y_val=np.asarray(validation[1]))
    else:
        booster.set_params(max_iter=min(config.tree_max_iter, 100))
        booster.fit(normalised(x), np.asarray(y))
    elapsed = time.perf_counter() - started
    if verbose:
        print(f"  boosted trees: {booster.n_iter_} rounds in {elapsed:.1f}s", file=sys.stderr, flush=True)
    return layer_from_sklearn(booster), int(booster.n_iter_), elapsed
