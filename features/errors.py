"""Errors of the feature platform; each says whether retrying the same call can help."""

from __future__ import annotations

from config.errors import FraudstreamError


class FeatureError(FraudstreamError):
    """Base class of every error raised by ``features``."""

    retryable: bool = False


class FeatureDefinitionError(FeatureError, ValueError):
    """A feature definition is invalid (a bug in the definitions: never retry)."""


class HistoryFormatError(FeatureError, ValueError):
    """An input history file or frame lacks a column or has bad values (fix the input: never retry)."""


class FeatureStoreUnavailable(FeatureError):
    """Redis could not be reached or dropped the connection (transient: retry the whole batch).

    Retrying is safe because every state change is idempotent per ``transaction_id``.
    """

    retryable = True


class FeatureScriptError(FeatureError):
    """Redis rejected a feature script call for a reason other than a missing script (do not retry)."""
