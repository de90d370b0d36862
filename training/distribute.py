"""``tf.distribute`` strategy chosen by configuration.

- ``default``: TensorFlow's default (no-op) strategy, one device.
- ``mirrored``: ``MirroredStrategy`` over the local devices (GPUs, or the CPU when there is none).
- ``multi_worker``: ``MultiWorkerMirroredStrategy``; the cluster and this process's role come from
  ``TF_CONFIG``, which TensorFlow's cluster resolver reads itself (it is TensorFlow's contract, not a
  fraudstream setting).
- ``auto``: ``multi_worker`` when ``TF_CONFIG`` describes more than one worker, else ``default``.

A strategy must be created before any other TensorFlow op runs in the process (collective ops are
configured at context start), so the CLI builds it first thing.
"""

from __future__ import annotations

from typing import Any, Literal

StrategyKind = Literal["auto", "default", "mirrored", "multi_worker"]
STRATEGY_KINDS: tuple[StrategyKind, ...] = ("auto", "default", "mirrored", "multi_worker")


def configure_threads(intra_op: int | None = None, inter_op: int | None = None) -> None:
    """Cap TensorFlow's thread pools (shared CPUs); must run before TensorFlow executes anything."""
    import tensorflow as tf

    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def cluster_workers() -> int:
    """Number of workers ``TF_CONFIG`` declares (0 without a cluster)."""
    import tensorflow as tf

    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec().as_dict()
    return len(spec.get("worker", [])) + len(spec.get("chief", []))


def make_strategy(kind: StrategyKind = "auto") -> Any:
    import tensorflow as tf

    if kind == "auto":
        kind = "multi_worker" if cluster_workers() > 1 else "default"
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        # RING collectives over gRPC: the CPU-capable implementation (NCCL needs GPUs).
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    msg = f"unknown strategy {kind!r}; choose one of {', '.join(STRATEGY_KINDS)}"
    raise ValueError(msg)


def is_chief(strategy: Any) -> bool:
    """Whether this process writes artefacts (exports, reports): worker 0, or any single-process run."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = str(resolver.task_type), int(resolver.task_id)
    return task_type == "chief" or (task_type == "worker" and task_id == 0)


def is_multi_worker(strategy: Any) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit_multi_worker(
    model: Any,
    dataset: Any,
    strategy: Any,
    *,
    epochs: int,
    steps_per_epoch: int,
    global_batch: int,
    loss_fn: Any = None,
) -> dict[str, list[float]]:
    """Synchronous data-parallel training of a compiled Keras model across workers.

    ``loss_fn``: a per-example loss (reduction ``None``); weighted binary cross-entropy by default.

    Every worker runs the same number of steps; each step's gradients are summed across replicas by the
    Keras optimizer (its all-reduce), with the loss scaled by the global batch size, so all workers apply
    the same update and end with the same weights.
    """
    import keras
    import tensorflow as tf

    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    if loss_fn is None:
        loss_fn = keras.losses.BinaryCrossentropy(reduction=None)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))

    def replica_step(x: Any, y: Any, w: Any) -> Any:
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            per_example = loss_fn(tf.reshape(y, [-1, 1]), pred) * w
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function  # type: ignore[untyped-decorator,unused-ignore]
    def train_step(it: Any) -> Any:
        per_replica = strategy.run(replica_step, args=next(it))
        return strategy.reduce("SUM", per_replica, axis=None)

    history: dict[str, list[float]] = {"loss": []}
    for _ in range(epochs):
        total = 0.0
        for _ in range(steps_per_epoch):
            total += float(train_step(iterator))
        history["loss"].append(total / steps_per_epoch)
    return history
