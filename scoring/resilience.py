"""What happens while the model server is slow or down.

``ResilientPredictor.predict`` retries retryable failures with capped, jittered exponential backoff; the
caller is blocked meanwhile, so the faust stream pauses and Kafka lag grows, but nothing is dropped. When
the outage has lasted ``grace_s`` it raises ``ModelOutage`` and the scorer publishes rules-only results
marked ``degraded``. While degraded each call makes one quick attempt (the circuit breaker keeps that
cheap), so the first success ends the outage: recovery needs no operator.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

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
        delay = self.backoff_initial_s
        while True:
            try:
                prediction = await self.backend.predict(features, label=label)
            except ScoringError as exc:
                if self.on_error is not None:
                    self.on_error(exc)
                if not exc.retryable:
                    raise
                now = self._clock()
                if self.outage_since is None:
                    self.outage_since = now
                    log.warning("model backend failing, retrying (stream paused): %s", exc)
                remaining = self.outage_since + self.grace_s - now
                if remaining <= 0:
                    msg = f"model unavailable for {now - self.outage_since:.1f}s: {exc}"
                    raise ModelOutage(msg) from exc
                self.retries += 1
                await asyncio.sleep(min(random.uniform(delay / 2, delay), remaining))
                delay = min(delay * 2, self.backoff_max_s)
            else:
                if self.outage_since is not None:
                    log.warning("model backend recovered after %.1fs", self._clock() - self.outage_since)
                    self.outage_since = None
                return prediction
