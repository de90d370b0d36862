from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.training import STAND_IN_SPEC, START, TINY, synthetic_history
from training.dataset import History, build_history, make_fold
from training.model import TrainedModel, train_model


def _few_tf_threads() -> None:
    # The machine's cores are shared; one thread per pool keeps the suite from starving its neighbours.
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow was already initialised by another test package


_few_tf_threads()


@pytest.fixture(scope="session")
def history() -> History:
    tx, labels = synthetic_history()
    return build_history(tx, labels, STAND_IN_SPEC)


@pytest.fixture(scope="session")
def trained(history: History) -> TrainedModel:
    fold = make_fold(history, START)
    x, y = history.features[fold.train_idx], history.y[fold.train_idx]
    return train_model(history.spec, x, y, TINY, verbose=False)


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return tmp_path / "models"
