"""One worker of the two-process MultiWorkerMirroredStrategy test (run as a script, TF_CONFIG set)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main(out: Path) -> None:
    import keras

    keras.config.disable_traceback_filtering()
    from training.distribute import configure_threads, is_chief, make_strategy

    configure_threads(1, 1)
    strategy = make_strategy("auto")  # must see TF_CONFIG and pick multi_worker
    from training.dataset import FeatureSpec
    from training.model import ModelConfig, train_model

    rng = np.random.default_rng(0)  # the same data on both workers; tf.data shards it between them
    x = rng.normal(size=(512, 4))
    y = (x[:, 0] + 0.5 * rng.normal(size=512) > 1.0).astype(np.int8)
    spec = FeatureSpec("mw", ("a", "b", "c", "d"), "mw-hash", lambda tx, labels: x)
    config = ModelConfig(hidden=(8,), dropout=0.0, epochs=2, batch_size=64, seed=3, ensemble=1, trees=False)
    trained = train_model(spec, x, y, config, strategy=strategy, verbose=False, steps_per_epoch=4)
    weights = trained.model.get_weights()
    np.savez(
        out,
        *weights,
        replicas=strategy.num_replicas_in_sync,
        steps=int(trained.model.optimizer.iterations.numpy()),
        chief=is_chief(strategy),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
