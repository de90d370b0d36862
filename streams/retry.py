"""Retry infrastructure calls until they succeed: while Redis or Kafka is away the stream pauses (consumer
lag grows) instead of skipping or dropping records."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.exceptions
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential, wait_random_exponential

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


def transient(exc: BaseException) -> bool:
    """The client libraries' connection errors, and any package error that says ``retryable``."""
    return isinstance(exc, TRANSIENT) or getattr(exc, "retryable", False) is True


async def retry_forever(
    call: Callable[[], Awaitable[T]], *, what: str, first_delay_s: float = 0.05, max_delay_s: float = 5.0
) -> T:
    """Await ``call()`` until it succeeds; only transient errors are retried, anything else propagates.

    Transient: the client libraries' connection errors, and any package error that says ``retryable``
    (``features`` wraps Redis connection errors in ``FeatureStoreUnavailable``, which must pause the stream,
    not stop the worker). The n-th wait is d * (0.5 + U(0, 1)) with d = ``first_delay_s`` * 2^(n-1) capped
    at ``max_delay_s``: half of it fixed, half jittered, so workers that lost Redis together do not all
    come back in the same millisecond. Each retried failure is counted (``fraudstream_backend_errors_total``,
    streams/failures.py); the end of a pause is logged with its length."""
    failed = 0
    failing_since = 0.0

    def warn(state: RetryCallState) -> None:
        nonlocal failed, failing_since
        failed = state.attempt_number  # failed attempts so far
        exc = state.outcome.exception() if state.outcome else None
        if failed == 1:
            failing_since = time.monotonic()
        if exc is not None:
            failures.report(what, exc)
        if failed == 1 or failed % 10 == 0:
            log.warning("%s failed (%s: %s); retrying, attempt %d", what, type(exc).__name__, exc, failed)

    retrying = AsyncRetrying(
        retry=retry_if_exception(transient),
        wait=wait_exponential(multiplier=first_delay_s / 2, max=max_delay_s / 2)
        + wait_random_exponential(multiplier=first_delay_s, max=max_delay_s),
        before_sleep=warn,
        reraise=True,
    )

    async def attempt() -> T:
        # tenacity awaits only what a coroutine function returns: ``call`` may be a lambda or a partial
        return await call()

    result: T = await retrying(attempt)
    if failed:  # the pause is over: say so, and how long it lasted
        log.warning("%s recovered after %d failed attempts (%.1fs)", what, failed, time.monotonic() - failing_since)
    return result
