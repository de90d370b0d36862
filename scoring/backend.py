"""The interface between the stream and a model server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Prediction:
    scores: npt.NDArray[np.float32]
    """Fraud probability per row, shape (n,)."""
    contributions: npt.NDArray[np.float32] | None
    """Per-row, per-feature contribution to the score (gradient × normalised input), shape (n, f)."""
    model_name: str
    model_version: int | None
    model_label: str | None = None


class ModelBackend(Protocol):
    """Scores a batch of raw feature vectors (float32, feature-list order)."""

    feature_list_hash: str | None

    async def start(self) -> None: ...

    async def predict(self, features: npt.NDArray[np.float32], *, label: str | None = None) -> Prediction: ...

    async def close(self) -> None: ...
