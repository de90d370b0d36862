"""``fraudstream worker``: run one faust worker process (several may share the consumer group)."""

from __future__ import annotations

import logging

from fraudstream.settings import Settings


def run_worker(settings: Settings, *, loglevel: str = "info") -> int:
    # Imported here so that `fraudstream --help` stays fast (faust and TensorFlow are heavy).
    import uvloop
    from faust.worker import Worker

    from streams.app import create_app
    from streams.runtime import WorkerRuntime

    uvloop.install()
    logging.getLogger("faust").setLevel(logging.WARNING)
    runtime = WorkerRuntime(settings)
    app = create_app(settings, runtime)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
