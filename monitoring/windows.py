"""Sliding windows as time buckets of fixed-length count vectors.

A window of W seconds is the sum of the buckets that started in the last W seconds (to bucket
resolution). Adding is O(bins); evaluating a window is O(W / bucket). Buckets older than the longest
window are dropped, so memory is bounded by ``longest_window / bucket_s`` vectors per series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    name: str
    seconds: float

    @classmethod
    def parse_many(cls, text: str) -> tuple[WindowSpec, ...]:
        """``"5m=300,1h=3600,1d=86400"`` (or just seconds: ``"300,3600"``) → window specs."""
        specs: list[WindowSpec] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            seconds = float(value or name)
            if not math.isfinite(seconds) or seconds <= 0:
                msg = f"window {part!r}: the length must be a positive number of seconds"
                raise ValueError(msg)
            specs.append(cls(name if value else f"{seconds:g}s", seconds))
        if not specs:
            msg = "at least one window is needed"
            raise ValueError(msg)
        return tuple(specs)


class BucketSeries:
    """Count vectors of one length, accumulated in time buckets."""

    def __init__(self, bins: int, *, bucket_s: float, horizon_s: float) -> None:
        if bins < 1 or bucket_s <= 0 or horizon_s <= 0:
            msg = "bins, bucket_s and horizon_s must be positive"
            raise ValueError(msg)
        self.bins = bins
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self._buckets: dict[int, Vector] = {}

    def _key(self, at: float) -> int:
        return math.floor(at / self.bucket_s)

    def add(self, counts: npt.NDArray[np.floating | np.integer], at: float) -> None:
        key = self._key(at)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = np.asarray(counts, dtype=np.float64).copy()
        else:
            bucket += counts

    def add_index(self, index: int, at: float, amount: float = 1.0) -> None:
        key = self._key(at)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = np.zeros(self.bins)
        bucket[index] += amount

    def replace(self, key: int, counts: Vector) -> None:
        """Set one bucket (used when a whole bucket is read from Redis again)."""
        self._buckets[key] = np.asarray(counts, dtype=np.float64)

    def window(self, seconds: float, now: float) -> Vector:
        first = self._key(now - seconds) + 1
        total = np.zeros(self.bins)
        for key, counts in self._buckets.items():
            if key >= first:
                total += counts
        return total

    def prune(self, now: float) -> None:
        first = self._key(now - self.horizon_s)
        for key in [k for k in self._buckets if k < first]:
            del self._buckets[key]

    def per_bucket(self, seconds: float, now: float) -> Mapping[int, Vector]:
        first = self._key(now - seconds) + 1
        return {k: v for k, v in sorted(self._buckets.items()) if k >= first}
