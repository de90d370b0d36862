"""Fixtures of the fault tests: a real tiny SavedModel shared by the session, a home per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from features import FEATURE_LIST
from scoring.testing.model_factory import export_model, write_labels


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("chaos-models")
    export_model(repo, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
    write_labels(repo / "fraud_dnn", {"stable": 1})  # the tfserving backend asks for label=stable
    return repo


@pytest.fixture(scope="session")
def local_backend(model_repo: Path) -> str:
    return f"local://{model_repo / 'fraud_dnn'}"
