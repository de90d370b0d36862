"""The errors every package shares: one base whose ``retryable`` says whether the same call can succeed
later, so a retry loop (``streams/retry.py``) or the CLI decides from the type, never from a message. Each
package keeps its own subclasses (``features/errors.py``, ``scoring/errors.py``, ``training/errors.py``)."""

from __future__ import annotations


class FraudstreamError(Exception):
    """Base of every error a fraudstream package raises on purpose."""

    retryable: bool = False


class BadBackendUri(FraudstreamError):
    """``model_backend`` could not be parsed; a configuration error, fixed by changing settings."""
