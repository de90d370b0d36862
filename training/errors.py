"""Exceptions of the trainer; ``retryable`` tells a caller (service, CLI) whether trying again can help."""

from __future__ import annotations

from config.errors import FraudstreamError


class TrainingError(FraudstreamError):
    """Base of every error raised by ``training``."""

    retryable: bool = False


class DatasetError(TrainingError):
    """The input history cannot make the requested training set (bad file, empty window, bad mapping)."""


class RegistryError(TrainingError):
    """The model repository is missing a version or label, or a label move is not allowed."""


class ExportError(TrainingError):
    """A trained model could not be written in the serving layout."""


class StreamPathUnavailable(TrainingError):
    """An unknown score path was asked for (``--via`` takes ``offline`` or ``stream``)."""


class TrainerBusy(TrainingError):
    """The trainer service already has a job with this id queued or running."""

    retryable = True
