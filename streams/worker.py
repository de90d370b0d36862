"""``fraudstream worker``: run one faust worker process (several may share the consumer group)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from config.settings import Settings
from streams.errors import WorkerStartFailed

if TYPE_CHECKING:
    from streams.runtime import PathFactory

EXIT_UNEXPECTED = 70
"""An unexpected error stopped a running worker (EX_SOFTWARE); its batch in flight was not acked."""


def run_worker(settings: Settings, *, loglevel: str = "info", path_factory: PathFactory | None = None) -> int:
    """Run until SIGTERM (a clean stop, 0) or a failure. A worker that cannot start raises
    ``WorkerStartFailed`` (the CLI prints its one line, exit 1); one that failed while running returns 70.
    ``path_factory``: the pipeline's record path, for a benchmark baseline (default: the batched path)."""
    # Imported here so that `fraudstream --help` stays fast (faust and TensorFlow are heavy).
    import uvloop
    from faust.worker import Worker

    from streams.app import create_app
    from streams.runtime import WorkerRuntime, one_line

    uvloop.install()
    logging.getLogger("faust").setLevel(logging.WARNING)
    runtime = WorkerRuntime(settings, path_factory=path_factory)
    app = create_app(settings, runtime)
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()  # always leaves through SystemExit (mode's ``exiting``)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:  # pragma: no cover - mode never returns
        code = 0
    if runtime.failure is not None and not runtime.built:
        msg = f"the worker cannot start: {one_line(runtime.failure)}"
        raise WorkerStartFailed(msg) from runtime.failure
    if runtime.failure is not None:
        return EXIT_UNEXPECTED
    return code
