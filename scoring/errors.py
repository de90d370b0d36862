"""Exceptions of the scoring package.

Every exception says whether retrying the same call can succeed (``retryable``), so the resilience layer
decides from the type, never from a message. Foreign errors (gRPC, TensorFlow, OS) are wrapped with
``raise ... from exc``.
"""

from __future__ import annotations

from config.errors import FraudstreamError


class ScoringError(FraudstreamError):
    """Base of all scoring errors."""

    retryable: bool = False


class BackendUnavailable(ScoringError):
    """The model server could not answer now (down, slow, overloaded); the same call may succeed later."""

    retryable = True


class CircuitOpen(BackendUnavailable):
    """The circuit breaker is open: calls are refused without reaching the server until it cools down."""


class InvalidRequest(ScoringError):
    """The server rejected the request itself (wrong shape, unknown signature): retrying cannot help."""


class ModelNotFound(ScoringError):
    """No servable model, version or version label matches the request."""


class LabelNotFound(ModelNotFound):
    """The requested version label (e.g. ``canary``) is not assigned to any loaded version."""


class ModelRejected(ScoringError):
    """A model version failed a check before it could serve; ``reason`` is a short metric label."""

    reason: str = "invalid"


class WarmupFailed(ModelRejected):
    """The version's own warm-up requests fail on it (e.g. an input width its metadata does not declare)."""

    reason = "warmup"


class NonFiniteOutput(ModelRejected):
    """The version answers its warm-up requests with NaN or infinite scores (e.g. weights gone NaN)."""

    reason = "non_finite"


class FeatureHashMismatch(ModelRejected):
    """The model was trained on a different feature list than the worker computes: refusing to score."""

    reason = "feature_hash"

    def __init__(self, *, model: str, model_hash: str | None, expected_hash: str) -> None:
        self.model = model
        self.model_hash = model_hash
        self.expected_hash = expected_hash
        super().__init__(
            f"feature list hash mismatch for {model}: the model was trained on feature list "
            f"{model_hash!r} but this worker computes {expected_hash!r}; deploy a model trained on the "
            "current feature definitions (or roll the worker back) — refusing to start"
        )


class PolicyError(ScoringError):
    """The decision-policy file is invalid; the previous policy stays in force."""
