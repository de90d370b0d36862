"""Errors of the streaming worker; each says whether retrying the same call can help."""

from __future__ import annotations


class StreamsError(Exception):
    """Base class of every error raised by ``streams``."""

    retryable: bool = False


class UntestedLibrary(StreamsError):
    """faust, mode or aiokafka is not the version ``streams/faust_patches.py`` was checked against (install
    the tested version or re-check the patches: never retry)."""


class WorkerStartFailed(StreamsError):
    """The worker could not build or check its clients or its model (the message says which and why)."""


class WorkerFailed(StreamsError):
    """An unexpected error in a batch stopped the worker; the batch was not acked and is redelivered."""
