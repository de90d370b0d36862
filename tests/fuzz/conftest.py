"""The fuzz test runs a real worker with the same tiny SavedModel as the fault tests."""

from __future__ import annotations

from tests.chaos.conftest import local_backend, model_repo

__all__ = ["local_backend", "model_repo"]
