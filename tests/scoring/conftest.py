"""Fixtures of the scoring tests: a tiny real model repository and one harness per backend kind.

The contract suite (test_scoring_contract.py) is parametrised with ``indirect=True`` over ``harness``, so
every test runs against the local SavedModel backend and against the gRPC backend talking to the
in-process TF Serving servicer.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from scoring.testing.model_factory import export_model, write_labels
from scoring.testing.servicer import InProcessModelServer
from tests.fixtures.scoring import MODEL, Harness


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Versions 1 (stable) and 2 (canary), exported once per session and copied per test."""
    repo = tmp_path_factory.mktemp("model-template")
    export_model(repo, model_name=MODEL, version=1)
    export_model(repo, model_name=MODEL, version=2)
    write_labels(repo / MODEL, {"stable": 1, "canary": 2})
    return repo


@pytest.fixture
def model_dir(template_repo: Path, tmp_path: Path) -> Path:
    shutil.copytree(template_repo, tmp_path / "repo")
    model_dir: Path = tmp_path / "repo" / MODEL
    return model_dir


@pytest.fixture
async def harness(request: pytest.FixtureRequest, model_dir: Path) -> AsyncIterator[Harness]:
    kind = request.param
    server = None
    if kind == "tfserving":
        server = InProcessModelServer(model_dir)
        await server.start()
    h = Harness(kind, model_dir, server, [])
    try:
        yield h
    finally:
        for backend in h.backends:
            await backend.close()
        if server is not None:
            await server.stop()
