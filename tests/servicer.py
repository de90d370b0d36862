"""The in-process TF Serving servicer for tests (any package's): ``PredictionService`` + ``ModelService`` on
a loopback ``grpc.aio`` server backed by real SavedModels, with injected latency, error codes and version
changes.

The implementation lives in ``scoring/testing/servicer.py`` so that ``fraudstream bench scoring`` (an
installed console script, which cannot import ``tests``) runs the very same servicer; this module is the
tests' entry point and adds the ``serving`` context manager.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from scoring.testing.servicer import InProcessModelServer

__all__ = ["InProcessModelServer", "serving"]


@asynccontextmanager
async def serving(model_dir: Path) -> AsyncIterator[InProcessModelServer]:
    """Start a servicer for ``model_dir`` (``<repo>/<model_name>``) on a free port; stop it afterwards."""
    server = InProcessModelServer(model_dir)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
