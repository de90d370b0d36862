"""``fraudstream worker``: run one faust worker process (several may share the consumer group)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from config.settings import Settings

if TYPE_CHECKING:
    from streams.runtime import PathFactory


def run_worker(settings: Settings, *, loglevel: str = "info", path_factory: PathFactory | None = None) -> int:
    """``path_factory``: the pipeline's record path, for a benchmark baseline (default: the batched path)."""
    # Imported here so that `fraudstream --help` stays fast (faust and TensorFlow are heavy).
    import uvloop
    from faust.worker import Worker

    from streams.app import create_app
    from streams.runtime import WorkerRuntime

    uvloop.install()
    logging.getLogger("faust").setLevel(logging.WARNING)
    runtime = WorkerRuntime(settings, path_factory=path_factory)
    app = create_app(settings, runtime)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
