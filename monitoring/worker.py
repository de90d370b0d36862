"""The one object the streaming worker holds for monitoring: Prometheus metrics plus the per-feature
drift sketch, fed once per micro-batch.

Wiring (streams/ owns the calls; see docs/monitoring.md)::

    monitoring = WorkerMonitoring.start(settings, redis=settings.redis.client(), feature_names=FEATURE_LIST.names)
    ...
    outcome = await pipeline.handle(batch)               # after the batch is published and acked
    await monitoring.after_batch(outcome, features=vectors, models=model_counts, degraded=n_degraded,
                                 publish_s=publish_seconds)
    ...
    await monitoring.close()      # at shutdown: flushes the last sketch counts, stops serving /metrics

Nothing here raises into the worker: metrics are in-process, and the sketch logs and drops counts when
Redis is unavailable (scoring matters more than its monitoring).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy.typing as npt
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from config.errors import BadBackendUri
from config.settings import Settings
from monitoring.metrics import BatchOutcomeLike, WorkerMetrics
from monitoring.reference import ReferenceCatalog
from monitoring.sketch import FeatureDriftSketch

log = logging.getLogger(__name__)


def sketch_model_dir(settings: Settings) -> Path:
    """Where the references the sketch bins on are: the local backend's model directory, else (TF Serving)
    the model repository of this home, when it is mounted here."""
    try:
        spec = settings.model.spec
    except BadBackendUri:
        spec = None  # the scorer reports the bad URI; monitoring falls back to the home's repository
    if spec is not None and spec.path is not None:
        return spec.path
    return settings.model_repository / settings.model_name


class WorkerMonitoring:
    def __init__(self, metrics: WorkerMetrics, sketch: FeatureDriftSketch | None = None) -> None:
        self.metrics = metrics
        self.sketch = sketch
        self.port: int | None = None
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls, settings: Settings, *, redis: Redis | RedisCluster | None, feature_names: Sequence[str],
        port: int | None = None, host: str | None = None,
    ) -> WorkerMonitoring:
        """Metrics served on ``host:port`` (default: ``settings.monitoring``'s, loopback and 9108 unless
        configured; negative = not served); the sketch bins on
        the stable model version's reference when the model repository is readable here
        (``<home>/models/<model_name>``), else it stays off."""
        monitoring = cls(WorkerMetrics())
        options = settings.monitoring
        chosen = port if port is not None else options.metrics_port
        # loopback unless configured otherwise (FRAUD_METRICS_HOST; docker-compose sets 0.0.0.0)
        host = host if host is not None else options.metrics_host
        if chosen >= 0:
            try:
                monitoring.port = monitoring.metrics.serve(chosen, host=host)
                log.info("worker metrics on %s:%d/metrics", host, monitoring.port)
            except OSError as exc:
                # Several local workers share one host: the second keeps scoring without an endpoint.
                log.warning("worker metrics not served on %s:%d: %s", host, chosen, exc)
        model_dir = sketch_model_dir(settings)
        if redis is not None and model_dir.is_dir():
            monitoring.sketch = FeatureDriftSketch(redis, ReferenceCatalog(model_dir), feature_names,
                                                   bucket_s=options.drift_bucket_s, namespace=settings.app_id)
        return monitoring

    async def after_batch(
        self, outcome: BatchOutcomeLike, *, features: npt.NDArray[Any] | None = None,
        models: Mapping[tuple[str, int | None, str | None], int] | None = None,
        degraded: int | None = None, publish_s: float | None = None,
    ) -> None:
        """Once per published micro-batch.

        ``features``: the ``(scored rows, features)`` matrix the model saw; ``models``: records per
        ``(model_name, model_version, model_label)``; ``degraded``: records scored without the model;
        ``publish_s``: seconds spent publishing the batch.
        """
        self.metrics.observe_batch(outcome, publish_s=publish_s)
        if models:
            self.metrics.observe_models(models)
        if degraded is not None:
            self.metrics.set_degraded(degraded > 0, degraded)
        if self.sketch is not None and features is not None:
            self.sketch.observe(features)
            await self.sketch.maybe_flush()
            if self._flusher is None:
                self._flusher = asyncio.create_task(self._flush_when_idle(self.sketch), name="drift-sketch-flush")

    async def _flush_when_idle(self, sketch: FeatureDriftSketch) -> None:
        """Counts of the last batches before the traffic pauses reach Redis too (``maybe_flush`` runs only
        when a batch arrives): a monitor would otherwise miss up to ``flush_every_s`` of each burst."""
        while True:
            await asyncio.sleep(sketch.flush_every_s)
            await sketch.maybe_flush()

    async def close(self) -> None:
        """Flush the sketch's last counts to Redis (else up to ``flush_every_s`` of traffic is missing from the
        drift windows) and stop serving ``/metrics``. Called once, by the worker's ``on_stop``."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self.sketch is not None:
            await self.sketch.flush()
        self.metrics.stop()
