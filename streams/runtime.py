"""The worker's lifecycle: a mode ``Service`` the faust app starts before its consumer and agents, and stops
after them.

``on_start`` builds and checks every client the worker holds (Redis, the feature store's functions, the
model, the publisher) and fails fast with a one-line reason: a worker that cannot score never joins the
consumer group. ``on_stop`` runs once faust has stopped fetching and waited for the taken records to be
acked; it drains what is still in flight, flushes the drift sketch, stops serving metrics and closes the
publisher, the scorer, the feature store and the Redis client, in the reverse order of opening.

An unexpected error in a batch (``fail``) crashes the faust app instead of leaving the process: faust then
stops as on a signal but without waiting for the failed batch, commits only the offsets of acked records
(the failed batch and everything after it are redelivered) and the worker exits non-zero
(``streams/worker.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
from mode import Service

from config.settings import Settings
from features import FEATURE_LIST, RedisFeatureStore
from features.ids import TransactionIds
from monitoring.worker import WorkerMonitoring
from scoring import Scorer
from streams import failures
from streams.errors import WorkerFailed, WorkerStartFailed
from streams.faust_patches import ack_messages, drop_monitor_sensor
from streams.flow import BatchFlow
from streams.identity import CardHasher
from streams.labels import LabelHandler
from streams.pipeline import (
    BatchOutcome,
    CheckedMessage,
    PipelineConfig,
    PreparedBatch,
    RecordPath,
    TransactionPipeline,
)
from streams.publisher import KafkaBatchPublisher

log = logging.getLogger(__name__)
T = TypeVar("T")
DRAIN_TIMEOUT_S = 30.0
"""How long ``on_stop`` waits for batches still in flight; what is not done by then is not acked, and is
redelivered to the next worker."""


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


def one_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` and of the errors it was raised from, on one line."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        text = " ".join(str(seen).split())
        parts.append(f"{type(seen).__name__}: {text}" if text else type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _awaitable(call: Callable[[], object]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        call()

    return run


class WorkerRuntime(Service):
    def __init__(self, settings: Settings, *, path_factory: PathFactory | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._path_factory = path_factory
        self.totals = Totals()
        self.failure: BaseException | None = None
        """The error that stopped the worker (at start or in a batch), if any."""
        self.built = False
        """Every client built and checked (``on_start`` finished)."""
        self._announced = False
        self.monitoring: WorkerMonitoring | None = None
        self._app: faust.App | None = None
        self._pipeline: TransactionPipeline | None = None
        self._labels: LabelHandler | None = None
        self._flow: BatchFlow[CheckedMessage, PreparedBatch, PreparedBatch] | None = None
        self._closers: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        """What ``on_start`` opened, in order; ``on_stop`` closes it in reverse."""
        self._last_report = time.monotonic()

    def bind(self, app: faust.App) -> None:
        """Make this the app's first dependency: started before the app's consumer and agents, stopped after
        them."""
        self._app = app
        app.add_dependency(self)
        app.on_partitions_assigned.connect(self._on_partitions_assigned)

    @property
    def pipeline(self) -> TransactionPipeline:
        if self._pipeline is None:
            msg = "the worker runtime is not started"
            raise RuntimeError(msg)
        return self._pipeline

    @property
    def flow(self) -> BatchFlow[CheckedMessage, PreparedBatch, PreparedBatch]:
        if self._flow is None:
            msg = "the worker runtime is not started"
            raise RuntimeError(msg)
        return self._flow

    @property
    def labels(self) -> LabelHandler:
        if self._labels is None:
            msg = "the worker runtime is not started"
            raise RuntimeError(msg)
        return self._labels

    async def on_start(self) -> None:
        assert self._app is not None, "bind(app) first"
        drop_monitor_sensor(self._app)  # see streams/faust_patches.py (6)
        try:
            await self._build()
        except Exception as exc:
            self.failure = exc
            reason = one_line(exc)
            log.critical("the worker cannot start: %s", reason)
            msg = f"the worker cannot start: {reason}"
            raise WorkerStartFailed(msg) from exc

    async def _opened(self, name: str, close: Callable[[], Awaitable[object]], start: Awaitable[T]) -> T:
        self._closers.append((name, close))  # closed even if its start fails half-way
        return await start

    async def _build(self) -> None:
        settings = self.settings
        client = settings.redis.client()
        await self._opened("Redis client", client.aclose, client.ping())
        # WAIT (features/replication.py): the features, labels and stored results of a batch are confirmed by
        # replicas before the calls return, so before the batch is acked (_finish_batch)
        wait, wait_ms = settings.redis_wait_replicas, settings.redis_wait_timeout_ms
        features = RedisFeatureStore(client, key_prefix=settings.feature_key_prefix,
                                     dedup_horizon_s=settings.dedup_horizon_s, wait_replicas=wait,
                                     wait_timeout_ms=wait_ms)
        await self._opened("feature store", features.close, features.load_scripts())
        ids = TransactionIds(client, key_prefix=settings.feature_key_prefix, horizon_s=settings.dedup_horizon_s,
                             wait_replicas=wait, wait_timeout_ms=wait_ms)
        await ids.load_scripts()
        if settings.redis_wait_replicas:
            log.info("Redis writes confirmed by %d replica(s) (WAIT, %d ms) before a batch is acked",
                     settings.redis_wait_replicas, settings.redis_wait_timeout_ms)
        self.monitoring = WorkerMonitoring.start(settings, redis=client, feature_names=FEATURE_LIST.names)
        self._closers.append(("monitoring (drift sketch flush, /metrics)", self.monitoring.close))
        metrics = self.monitoring.metrics
        remove_hook = failures.on_failure(metrics.backend_error)  # retried Redis / Kafka failures on /metrics
        self._closers.append(("failure hook", _awaitable(remove_hook)))
        scorer = Scorer.from_settings(settings, feature_names=FEATURE_LIST.names, feature_hash=FEATURE_LIST.hash)
        scorer.on_backend_error = lambda exc: metrics.backend_error("model", type(exc).__name__)
        scorer.on_model_rejected = metrics.model_rejected  # a refused model version on /metrics
        await self._opened("scorer", scorer.close, scorer.start())
        publisher = KafkaBatchPublisher(settings.kafka)
        await self._opened("publisher", publisher.close, publisher.start())
        hasher = CardHasher(settings.card_hash_key())
        config = PipelineConfig(
            scored_topic=settings.topics.scored, dead_letter_topic=settings.topics.dead_letter,
            feature_names=FEATURE_LIST.names, feature_list_hash=FEATURE_LIST.hash,
            max_message_bytes=settings.max_message_bytes, max_clock_skew_s=settings.max_clock_skew_s,
            stage_timings=settings.scored_stage_timings,
        )
        path = await self._path_factory() if self._path_factory is not None else None
        self._pipeline = TransactionPipeline(
            config, features=features, ids=ids, scorer=scorer, publisher=publisher, hasher=hasher, path=path
        )
        self._labels = LabelHandler(
            features=features, publisher=publisher, hasher=hasher,
            dead_letter_topic=settings.topics.dead_letter, max_message_bytes=settings.max_message_bytes,
        )
        # Features are applied in order, records published in order, and messages acked only after the broker
        # acknowledged their records (see streams/flow.py).
        self._flow = BatchFlow(
            self._start_batch, self._complete_batch, self._finish_batch,
            max_batch=settings.batch_max_size, max_finishing=settings.max_batches_in_flight,
            max_pending=settings.batch_max_size * settings.max_batches_in_flight,
        )
        # TensorFlow and the model leave ~430k objects for the cyclic GC; each full collection walked
        # them all (~350 ms, a stall every few tens of thousands of records, measured). Frozen, they
        # are never walked again and a full collection takes about a millisecond.
        gc.freeze()
        self.built = True
        log.info("worker built: %d features (hash %s), model backend %s; joining the consumer group",
                 len(FEATURE_LIST.names), FEATURE_LIST.hash[:12], settings.effective_model_backend)

    async def _on_partitions_assigned(self, sender: Any, /, *args: Any, signal: Any, **_: Any) -> None:
        """The first assignment makes the worker ready: it is in the consumer group (whoever waits for the
        ready line, e.g. for the group's offsets, finds the group there; fraudstream/workers.py)."""
        if not self._announced:
            self._announced = True
            log.info("worker ready: %d features (hash %s), model backend %s, %d partitions assigned",
                     len(FEATURE_LIST.names), FEATURE_LIST.hash[:12], self.settings.effective_model_backend,
                     len(args[0]) if args else 0)

    async def on_stop(self) -> None:
        """After faust stopped fetching and (unless it crashed) waited for the taken records' acks."""
        drained = await self.drain(timeout_s=DRAIN_TIMEOUT_S)
        self._report()
        problems: list[str] = []
        for name, close in reversed(self._closers):
            try:
                await close()
            except Exception as exc:  # close the rest anyway
                problems.append(f"{name}: {one_line(exc)}")
        self._closers.clear()
        totals = self.totals
        if self.failure is not None:
            log.warning("worker stopped after a failure (%s); the failed batch was not acked",
                        one_line(self.failure))
        elif problems or not drained:
            log.warning("worker stopped, not cleanly: %s", "; ".join(
                problems + ([] if drained else [f"batches still in flight after {DRAIN_TIMEOUT_S:g} s"])))
        else:
            log.info("worker stopped cleanly: %d consumed, %d scored, %d dead-lettered; batches drained, drift "
                     "sketch flushed, publisher, scorer, feature store and Redis closed",
                     totals.consumed, totals.scored, totals.dead_lettered)

    async def drain(self, *, timeout_s: float | None = None) -> bool:
        """Wait for the batches in flight to be published and acked; True when none is left. After a failure
        the failed batch and those behind it never finish: they are abandoned, not waited for."""
        flow = self._flow
        if flow is None:
            return True
        if self.failure is not None:
            await flow.abandon()
            return False
        try:
            await asyncio.wait_for(flow.drain(), timeout_s)
        except TimeoutError:
            return False
        except WorkerFailed:
            return False
        return True

    async def fail(self, what: str, exc: BaseException) -> None:
        """An unexpected error: crash the app (mode marks the whole service tree crashed, and the worker stops
        without waiting for unacked records). The first failure wins."""
        if self.failure is not None:
            return
        self.failure = exc
        log.critical("%s; stopping the worker without acking the batch: %s", what, one_line(exc))
        await self.crash(exc)

    async def _guarded(self, what: str, step: Awaitable[T]) -> T:
        """A batch step; an error in it stops the worker (``fail``) and the batch is never acked."""
        if self.failure is not None:
            if asyncio.iscoroutine(step):
                step.close()
            msg = "the worker is stopping after a failure"
            raise WorkerFailed(msg)
        try:
            return await step
        except Exception as exc:
            await self.fail(f"unexpected error {what}", exc)
            msg = f"unexpected error {what}"
            raise WorkerFailed(msg) from exc

    async def _start_batch(self, items: list[CheckedMessage]) -> PreparedBatch:
        return await self._guarded("sending a batch to the feature state", self.pipeline.start(items))

    async def _complete_batch(self, batch: PreparedBatch) -> PreparedBatch:
        return await self._guarded("reading a batch's features", self.pipeline.complete(batch))

    async def _finish_batch(self, batch: PreparedBatch, items: list[CheckedMessage]) -> None:
        outcome = await self._guarded("scoring or publishing a batch", self.pipeline.finish(batch))
        assert self._app is not None
        # only after the broker acknowledged the batch's records; the messages are faust's
        ack_messages(self._app, [item.message for item in items])  # type: ignore[misc]
        await self.after_batch(outcome)

    async def submit(self, items: Sequence[CheckedMessage]) -> None:
        await self.flow.submit(list(items))

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
        if time.monotonic() - self._last_report >= 5.0:
            self._report()

    def _report(self) -> None:
        totals, now = self.totals, time.monotonic()
        self._last_report = now
        rate = totals.consumed / max(1e-9, now - totals.started)
        log.info("consumed %d, scored %d, dead-lettered %d (%.0f tx/s since start)",
                 totals.consumed, totals.scored, totals.dead_lettered, rate)
