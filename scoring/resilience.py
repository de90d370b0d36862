"""What happens while the model server is slow or down.

``ResilientPredictor.predict`` retries retryable failures with capped, jittered exponential backoff; the
caller is blocked meanwhile, so the faust stream pauses and Kafka lag grows, but nothing is dropped. When
the outage has lasted ``grace_s`` it raises ``ModelOutage`` and the scorer publishes rules-only results
marked ``degraded``. While degraded each call makes one quick attempt (the circuit breaker keeps that
cheap), so the first success ends the outage: recovery needs no operator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn

import numpy as np
import numpy.typing as npt
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential, wait_random_exponential

from scoring.backend import ModelBackend, Prediction
from scoring.errors import ScoringError

log = logging.getLogger(__name__)


class ModelOutage(ScoringError):
    """The model has been unavailable for longer than the grace period: score with rules only."""

    retryable = True


class ResilientPredictor:
    def __init__(
        self,
        backend: ModelBackend,
        *,
        grace_s: float,
        backoff_initial_s: float = 0.05,
        backoff_max_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.grace_s = grace_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self.outage_since: float | None = None
        self.retries = 0
        self.on_error: Callable[[ScoringError], None] | None = None
        """Called with every failed attempt (for a ``backend_errors`` metric); must not raise."""

    @property
    def degraded(self) -> bool:
        return self.outage_since is not None and self._clock() - self.outage_since >= self.grace_s

    async def predict(self, features: npt.NDArray[np.float32], label: str | None = None) -> Prediction:
        async def attempt() -> Prediction:
            try:
                return await self.backend.predict(features, label=label)
            except ScoringError as exc:
                if self.on_error is not None:
                    self.on_error(exc)
                if exc.retryable and self.outage_since is None:
                    self.outage_since = self._clock()
                    log.warning("model backend failing, retrying (stream paused): %s", exc)
                raise

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, ScoringError) and exc.retryable),
            wait=self._wait,
            stop=lambda _: self._remaining() <= 0,  # already degraded: one attempt, no backoff sleeps
            before_sleep=self._count_retry,
            retry_error_callback=self._outage,
            reraise=True,
        )
        prediction: Prediction = await retrying(attempt)
        if self.outage_since is not None:
            log.warning("model backend recovered after %.1fs", self._clock() - self.outage_since)
            self.outage_since = None
        return prediction

    def _remaining(self) -> float:
        """Seconds of the grace period left in the current outage."""
        assert self.outage_since is not None
        return self.outage_since + self.grace_s - self._clock()

    def _wait(self, state: RetryCallState) -> float:
        """d * U(0.5, 1) with d = ``backoff_initial_s`` * 2^(n-1) capped at ``backoff_max_s``; never past the
        grace period."""
        half = {"multiplier": self.backoff_initial_s / 2, "max": self.backoff_max_s / 2}
        jittered = wait_exponential(**half) + wait_random_exponential(**half)
        return min(jittered(state), self._remaining())

    def _count_retry(self, _: RetryCallState) -> None:
        self.retries += 1

    def _outage(self, state: RetryCallState) -> NoReturn:
        assert self.outage_since is not None and state.outcome is not None
        msg = f"model unavailable for {self._clock() - self.outage_since:.1f}s: {state.outcome.exception()}"
        raise ModelOutage(msg) from state.outcome.exception()
