"""Harness and helpers of the scoring tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from scoring.backend import ModelBackend, Prediction
from scoring.breaker import CircuitBreaker
from scoring.errors import BackendUnavailable
from scoring.local import LocalBackend
from scoring.scorer import Scorer
from scoring.testing.model_factory import DEFAULT_FEATURES, export_model, feature_list_hash
from scoring.testing.servicer import InProcessModelServer
from scoring.tfserving import TFServingBackend

MODEL = "fraud_dnn"
FEATURE_HASH = feature_list_hash(DEFAULT_FEATURES)
BACKENDS = ["local", "tfserving"]


class Interruptible:
    """A ``ModelBackend`` proxy that fails like an unreachable server while ``down`` is set: the local
    backend has no network to cut, so the outage is injected at its boundary (TensorFlow stays real)."""

    def __init__(self, inner: LocalBackend) -> None:
        self.inner = inner
        self.down = False
        self.feature_list_hash: str | None = inner.feature_list_hash

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def predict(self, features: npt.NDArray[np.float32], *, label: str | None = None) -> Prediction:
        if self.down:
            msg = "injected outage"
            raise BackendUnavailable(msg)
        return await self.inner.predict(features, label=label)


@dataclass
class Harness:
    kind: str
    model_dir: Path
    server: InProcessModelServer | None
    backends: list[Any]

    def backend(self, *, expected_hash: str | None = FEATURE_HASH, poll_interval_s: float = 0.1) -> Any:
        """A new, not yet started backend of this harness's kind."""
        backend: ModelBackend
        if self.kind == "local":
            backend = Interruptible(
                LocalBackend(self.model_dir, expected_feature_hash=expected_hash, poll_interval_s=poll_interval_s)
            )
        else:
            assert self.server is not None
            backend = TFServingBackend(
                self.server.target,
                MODEL,
                expected_feature_hash=expected_hash,
                label="stable",
                deadline_s=2.0,  # generous: the machine is shared; outages are injected as codes
                retries=1,
                backoff_s=0.01,
                breaker=CircuitBreaker(name="test", failure_threshold=3, reset_timeout_s=0.1),
            )
        self.backends.append(backend)
        return backend

    def scorer(self, backend: Any, **kwargs: Any) -> Scorer:
        kwargs.setdefault("grace_s", 0.3)
        kwargs.setdefault("max_wait_s", 0.001)
        return Scorer(backend, model_name=MODEL, feature_names=DEFAULT_FEATURES, feature_hash=FEATURE_HASH, **kwargs)

    def set_outage(self, backend: Any, down: bool) -> None:
        if self.kind == "local":
            backend.down = down
        else:
            assert self.server is not None
            if down:
                self.server.fail_with(grpc.StatusCode.UNAVAILABLE)
            else:
                self.server.heal()

    def versions_changed(self) -> None:
        """Tell the model server about new files (TF Serving's poller; the local backend polls itself)."""
        if self.server is not None:
            self.server.reload()

    def export(self, version: int, **kwargs: Any) -> None:
        export_model(self.model_dir.parent, model_name=MODEL, version=version, **kwargs)
