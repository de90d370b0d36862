"""A small circuit breaker: after ``failure_threshold`` consecutive failures calls fail fast for
``reset_timeout_s``, then one probe call is let through (half-open); its success closes the circuit.

Failing fast matters because a dead server otherwise costs a full deadline per call while the stream is
paused anyway; the resilience layer's backoff decides when to try again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from scoring.errors import CircuitOpen

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(
        self,
        *,
        name: str,
        failure_threshold: int = 5,
        reset_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            msg = "failure_threshold must be >= 1 and reset_timeout_s > 0"
            raise ValueError(msg)
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.reset_timeout_s:
            return "half_open"
        return "open"

    def before_call(self) -> None:
        """Raise ``CircuitOpen`` unless a call may go through now."""
        state = self.state
        if state == "closed":
            return
        if state == "half_open" and not self._probing:
            self._probing = True
            return
        assert self._opened_at is not None
        remaining = self.reset_timeout_s - (self._clock() - self._opened_at)
        msg = f"circuit {self.name} open ({self._failures} failures); next probe in {max(remaining, 0):.2f}s"
        raise CircuitOpen(msg)

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def release_probe(self) -> None:
        """The call ended without an outcome (cancelled): let another call probe."""
        self._probing = False

    def record_failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self._failures >= self.failure_threshold:
            self._opened_at = self._clock()
