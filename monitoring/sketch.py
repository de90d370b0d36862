"""Per-feature live histograms: the worker's side (``FeatureDriftSketch``) and the monitor's
(``FeatureSketchReader``).

The scored record does not carry the feature vector (it would triple its size), so the worker bins each
micro-batch's feature matrix on the reference's own edges and adds the counts to Redis, one hash per time
bucket::

    fraudstream:drift:<model>:<version>:<bucket_s>:<bucket index>   field "<feature>|<bin>" → count
                                                                   field "_n" → rows

``HINCRBY`` is additive, so any number of workers share the same buckets; keys expire after the longest
window. Both sides take ``bucket_s`` from one setting (``Settings.drift_bucket_s``): a worker and a monitor
with different sizes would write and read different keys. The monitor re-reads only the buckets that may
still change, so a day-long window costs one small read per evaluation after start-up.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from monitoring.reference import Reference, ReferenceCatalog
from monitoring.stats import bin_counts
from monitoring.windows import BucketSeries

log = logging.getLogger(__name__)
KEY_PREFIX = "fraudstream:drift"
ROWS_FIELD = "_n"


DEFAULT_NAMESPACE = "fraudstream-worker"  # the default app id (FRAUD_APP_ID)


def bucket_key(namespace: str, model: str, version: int, bucket_s: float, index: int) -> str:
    """The namespace is the deployment's (its workers' app id): two deployments that share a Redis and a
    model name must not read each other's histograms as their own traffic."""
    return f"{KEY_PREFIX}:{namespace}:{model}:{version}:{bucket_s:g}:{index}"


class FeatureDriftSketch:
    """Fixed-bin feature histograms accumulated by the worker and published to Redis.

    Worker hook: ``observe(matrix)`` once per micro-batch (synchronous, a ``searchsorted`` per feature),
    then ``await maybe_flush()``; ``await flush()`` at shutdown. Failures to publish are logged and
    the pending counts dropped: monitoring must never hold up scoring.
    """

    def __init__(
        self, redis: Redis | RedisCluster, catalog: ReferenceCatalog, feature_names: Sequence[str], *,
        bucket_s: float, namespace: str = DEFAULT_NAMESPACE, flush_every_s: float = 2.0,
        ttl_s: float = 2 * 86_400.0, clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.catalog = catalog
        self.feature_names = tuple(feature_names)
        self.bucket_s = bucket_s
        self.flush_every_s = flush_every_s
        self.ttl_s = int(ttl_s)
        self.clock = clock
        self._reference: Reference | None = None
        self._columns: list[tuple[int, str, npt.NDArray[np.float64]]] = []
        self._pending: dict[int, dict[str, int]] = {}
        self._last_flush = clock()
        self._refresh_reference()

    def _refresh_reference(self) -> None:
        reference = self.catalog.get(self.catalog.stable_version())
        if reference is self._reference:
            return
        self._reference = reference
        features = reference.features if reference else {}
        # Only features the worker computes and the reference describes; others are skipped, not errors.
        self._columns = [
            (j, name, features[name].edges) for j, name in enumerate(self.feature_names) if name in features
        ]

    @property
    def reference(self) -> Reference | None:
        return self._reference

    def observe(self, features: npt.NDArray[Any]) -> None:
        """Add one micro-batch's ``(rows, len(feature_names))`` matrix to the current time bucket."""
        if not self._columns or features.shape[0] == 0:
            return
        pending = self._pending.setdefault(math.floor(self.clock() / self.bucket_s), {})
        for j, name, edges in self._columns:
            counts = bin_counts(features[:, j], edges)
            for b in np.flatnonzero(counts):
                field = f"{name}|{b}"
                pending[field] = pending.get(field, 0) + int(counts[b])
        pending[ROWS_FIELD] = pending.get(ROWS_FIELD, 0) + int(features.shape[0])

    async def maybe_flush(self) -> None:
        if self.clock() - self._last_flush >= self.flush_every_s:
            await self.flush()

    async def flush(self) -> None:
        self._last_flush = self.clock()
        pending, self._pending = self._pending, {}
        reference = self._reference
        if pending and reference is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for index, fields in pending.items():
                        key = bucket_key(self.namespace, reference.model_name, reference.version, self.bucket_s, index)
                        for field, n in fields.items():
                            pipe.hincrby(key, field, n)
                        pipe.expire(key, self.ttl_s)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("feature drift sketch: dropped %d buckets, Redis failed: %s", len(pending), exc)
        # A new stable version (or a reference written later) switches the bins from the next batch.
        self._refresh_reference()


class FeatureSketchReader:
    """The monitor's copy of the sketch buckets of one reference, as ``BucketSeries`` per feature."""

    def __init__(self, redis: Redis | RedisCluster, *, bucket_s: float, namespace: str = DEFAULT_NAMESPACE,
                 settle_s: float = 30.0, horizon_s: float = 86_400.0) -> None:
        self.redis = redis
        self.namespace = namespace
        self.bucket_s = bucket_s
        self.settle_s = settle_s
        self.horizon_s = horizon_s
        self._target: tuple[str, int] | None = None
        self._series: dict[str, BucketSeries] = {}
        self._rows = BucketSeries(1, bucket_s=bucket_s, horizon_s=horizon_s)
        self._next_index: int | None = None

    def series(self) -> dict[str, BucketSeries]:
        return self._series

    def rows(self, seconds: float, now: float) -> float:
        return float(self._rows.window(seconds, now)[0])

    async def refresh(self, reference: Reference, now: float) -> None:
        target = (reference.model_name, reference.version)
        if target != self._target:
            self._target = target
            self._series = {
                name: BucketSeries(h.counts.size, bucket_s=self.bucket_s, horizon_s=self.horizon_s)
                for name, h in reference.features.items()
            }
            self._rows = BucketSeries(1, bucket_s=self.bucket_s, horizon_s=self.horizon_s)
            self._next_index = math.floor((now - self.horizon_s) / self.bucket_s)
        assert self._next_index is not None
        last = math.floor(now / self.bucket_s)
        indices = list(range(self._next_index, last + 1))
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in indices:
                pipe.hgetall(bucket_key(self.namespace, reference.model_name, reference.version, self.bucket_s, index))
            results: list[dict[bytes, bytes]] = await pipe.execute()
        for index, raw in zip(indices, results, strict=True):
            if raw:
                self._store(index, raw)
        # Buckets that ended more than ``settle_s`` ago (workers flush every few seconds) are final.
        settled = math.floor((now - self.settle_s) / self.bucket_s)
        self._next_index = max(self._next_index, settled)
        for series in (*self._series.values(), self._rows):
            series.prune(now)

    def _store(self, index: int, raw: dict[bytes, bytes]) -> None:
        vectors = {name: np.zeros(s.bins) for name, s in self._series.items()}
        rows = 0.0
        for field_b, value in raw.items():
            field = field_b.decode()
            if field == ROWS_FIELD:
                rows = float(value)
                continue
            name, _, b = field.rpartition("|")
            vector = vectors.get(name)
            if vector is not None and b.isdigit() and int(b) < vector.size:
                vector[int(b)] = float(value)
        for name, vector in vectors.items():
            self._series[name].replace(index, vector)
        self._rows.replace(index, np.array([rows]))
