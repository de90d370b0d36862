"""The worker's dependencies, built once when the first agent starts (inside faust's event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import faust

from config.settings import Settings
from features import FEATURE_LIST, RedisFeatureStore
from features.ids import TransactionIds
from monitoring.worker import WorkerMonitoring
from scoring import Scorer
from streams import failures
from streams.identity import CardHasher
from streams.labels import LabelHandler
from streams.pipeline import BatchOutcome, PipelineConfig, RecordPath, TransactionPipeline
from streams.publisher import KafkaBatchPublisher

log = logging.getLogger(__name__)


PathFactory = Callable[[], Awaitable[RecordPath]]
"""Builds the pipeline's ``RecordPath`` in the worker's event loop; the shell passes one for a benchmark
baseline (``fraudstream/bench/baselines.py``), production runs the batched default."""


@dataclass
class Totals:
    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    degraded: int = 0
    started: float = field(default_factory=time.monotonic)


class WorkerRuntime:
    def __init__(self, settings: Settings, *, path_factory: PathFactory | None = None) -> None:
        self.settings = settings
        self._path_factory = path_factory
        self.totals = Totals()
        self._app: faust.App | None = None
        self._lock = asyncio.Lock()
        self._pipeline: TransactionPipeline | None = None
        self._labels: LabelHandler | None = None
        self.monitoring: WorkerMonitoring | None = None
        self._last_report = time.monotonic()

    def bind(self, app: faust.App) -> None:
        self._app = app

    async def _build(self) -> None:
        async with self._lock:
            if self._pipeline is not None:
                return
            assert self._app is not None
            # faust's Monitor sensor books every event (~15-20% of a no-work stream's CPU, measured);
            # the worker exports its own Prometheus metrics per micro-batch instead.
            with contextlib.suppress(KeyError):
                self._app.sensors.remove(self._app.monitor)
            settings = self.settings
            client = settings.redis.client()
            features = RedisFeatureStore(client, key_prefix=settings.feature_key_prefix,
                                         dedup_horizon_s=settings.dedup_horizon_s)
            ids = TransactionIds(client, key_prefix=settings.feature_key_prefix, horizon_s=settings.dedup_horizon_s)
            self.monitoring = WorkerMonitoring.start(settings, redis=client, feature_names=FEATURE_LIST.names)
            metrics = self.monitoring.metrics
            failures.on_failure(metrics.backend_error)  # retried Redis / Kafka failures
            scorer = Scorer.from_settings(
                settings, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash
            )
            scorer.on_backend_error = lambda exc: metrics.backend_error("model", type(exc).__name__)
            await scorer.start()
            publisher = KafkaBatchPublisher(settings.kafka)
            await publisher.start()
            hasher = CardHasher(settings.card_hash_key())
            config = PipelineConfig(
                scored_topic=settings.topics.scored, dead_letter_topic=settings.topics.dead_letter,
                feature_names=FEATURE_LIST.names, feature_list_hash=FEATURE_LIST.hash,
                max_message_bytes=settings.max_message_bytes, max_clock_skew_s=settings.max_clock_skew_s,
            )
            path = await self._path_factory() if self._path_factory is not None else None
            self._pipeline = TransactionPipeline(
                config, features=features, ids=ids, scorer=scorer, publisher=publisher, hasher=hasher, path=path
            )
            self._labels = LabelHandler(
                features=features, publisher=publisher, hasher=hasher,
                dead_letter_topic=settings.topics.dead_letter, max_message_bytes=settings.max_message_bytes,
            )
            # TensorFlow and the model leave ~430k objects for the cyclic GC; each full collection walked
            # them all (~350 ms, a stall every few tens of thousands of records, measured). Frozen, they
            # are never walked again and a full collection takes about a millisecond.
            gc.freeze()
            log.info("worker ready: %d features (hash %s), model backend %s", len(FEATURE_LIST.names),
                     FEATURE_LIST.hash[:12], settings.effective_model_backend)

    async def pipeline(self) -> TransactionPipeline:
        await self._build()
        assert self._pipeline is not None
        return self._pipeline

    async def label_handler(self) -> LabelHandler:
        await self._build()
        assert self._labels is not None
        return self._labels

    async def after_batch(self, outcome: BatchOutcome) -> None:
        """Once per published and acknowledged micro-batch: metrics, drift sketch, progress log."""
        if self.monitoring is not None:
            await self.monitoring.after_batch(outcome, features=outcome.features, models=outcome.models,
                                              degraded=outcome.degraded, publish_s=outcome.publish_s)
        self.record(outcome)

    async def update_consumer_lag(self) -> None:
        """``fraudstream_consumer_lag`` of every partition this worker holds: the broker's end offset minus
        the consumer's position (the next offset it reads). Called every few seconds by a timer; partitions
        that moved to another worker lose their series here. Never raises into the worker."""
        if self.monitoring is None or self._app is None:
            return
        metrics = self.monitoring.metrics
        ours = {self.settings.topics.transactions, self.settings.topics.labels}
        try:
            consumer = self._app.consumer
            tps = sorted(tp for tp in consumer.assignment() if tp.topic in ours)
            ends = await consumer.highwaters(*tps) if tps else {}
            lags = {}
            for tp in tps:
                position = await consumer.position(tp)
                if position is not None and tp in ends:
                    lags[(tp.topic, tp.partition)] = int(ends[tp]) - int(position)
        except Exception as exc:  # a rebalance or a broker away: the next round tries again
            log.debug("consumer lag not updated: %s: %s", type(exc).__name__, exc)
            return
        metrics.replace_consumer_lag(lags)

    def record(self, outcome: BatchOutcome) -> None:
        totals = self.totals
        totals.consumed += outcome.consumed
        totals.scored += outcome.scored
        totals.dead_lettered += outcome.dead_lettered
        now = time.monotonic()
        if now - self._last_report >= 5.0:
            self._last_report = now
            rate = totals.consumed / max(1e-9, now - totals.started)
            log.info("consumed %d, scored %d, dead-lettered %d (%.0f tx/s since start)",
                     totals.consumed, totals.scored, totals.dead_lettered, rate)
