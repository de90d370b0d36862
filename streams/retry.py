"""Retry infrastructure calls until they succeed: while Redis or Kafka is away the stream pauses (consumer
lag grows) instead of skipping or dropping records."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions
from aiokafka.errors import KafkaError

from streams import failures

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
    KafkaError,
    ConnectionError,
    TimeoutError,
    OSError,
)


async def retry_forever(
    call: Callable[[], Awaitable[T]], *, what: str, first_delay_s: float = 0.05, max_delay_s: float = 5.0
) -> T:
    """Await ``call()`` until it succeeds; only transient errors are retried, anything else propagates.

    Transient: the client libraries' connection errors, and any package error that says ``retryable``
    (``features`` wraps Redis connection errors in ``FeatureStoreUnavailable``, which must pause the stream,
    not stop the worker)."""
    delay = first_delay_s
    attempt = 0
    failing_since = 0.0
    while True:
        try:
            result = await call()
        except Exception as exc:
            if not (isinstance(exc, TRANSIENT) or getattr(exc, "retryable", False) is True):
                raise
            if attempt == 0:
                failing_since = time.monotonic()
            attempt += 1
            failures.report(what, exc)  # fraudstream_backend_errors_total (streams/failures.py)
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s failed (%s: %s); retrying, attempt %d", what, type(exc).__name__, exc, attempt)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(max_delay_s, delay * 2)
        else:
            if attempt:  # the pause is over: say so, and how long it lasted
                log.warning("%s recovered after %d failed attempts (%.1fs)", what, attempt,
                            time.monotonic() - failing_since)
            return result
