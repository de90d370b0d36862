"""The interface between the stream and a model server.

The worker needs three names: ``Scorer`` (``from_settings``, ``start``, ``score_batch``, ``close``),
``ScoreResult`` and ``FeatureHashMismatch`` (raised by ``Scorer.start`` when the model was trained on another
feature list). ``open_backend`` builds a bare ``ModelBackend`` from a ``model_backend`` URI.
"""

from scoring.backend import ModelBackend, Prediction
from scoring.errors import FeatureHashMismatch, ScoringError
from scoring.factory import open_backend
from scoring.scorer import Scorer, ScoreResult

__all__ = [
    "FeatureHashMismatch",
    "ModelBackend",
    "Prediction",
    "ScoreResult",
    "Scorer",
    "ScoringError",
    "open_backend",
]
