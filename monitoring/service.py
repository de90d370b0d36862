"""The drift monitor service: consumes ``scored-transactions``, ``transactions-dlq`` and ``fraud-labels``,
evaluates drift every few seconds, publishes ``drift-alerts`` (and ``retrain-requests`` when enabled), and
exports its own Prometheus metrics.

It reads with assigned partitions (no consumer group): every monitor sees all records, and at start it
seeks to the offsets of ``now - longest window`` so the windows are full again after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from config.kafka import KafkaConnection
from config.settings import Topics
from monitoring.drift import DriftConfig, MonitorState, snapshot
from monitoring.reference import ReferenceCatalog
from monitoring.sketch import DEFAULT_NAMESPACE, FeatureSketchReader
from schemas.codec import encode
from schemas.drift import DriftAlert
from schemas.retrain import RetrainRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorOptions:
    bootstrap: str
    topics: Topics
    model_dir: Path | None
    drift: DriftConfig
    evaluate_every_s: float = 5.0
    lag_group: str | None = None
    """The worker's consumer group (its faust app id), whose lag on ``transactions`` is exported; also the
    namespace of the workers' feature sketches in Redis."""
    lag_every_s: float = 10.0
    kafka: KafkaConnection | None = None
    """The cluster's connection (TLS / SASL); None: ``bootstrap`` in plaintext."""

    @property
    def connection(self) -> KafkaConnection:
        return self.kafka or KafkaConnection(bootstrap=self.bootstrap)


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.psi = Gauge("fraudstream_drift_psi", "PSI against the training reference",
                         ["subject", "window"], registry=registry)
        self.ks = Gauge("fraudstream_drift_ks", "KS statistic against the training reference",
                        ["subject", "window"], registry=registry)
        self.alerts = Counter("fraudstream_drift_alerts", "Sustained-drift alerts published",
                              ["subject", "window"], registry=registry)
        self.records = Counter("fraudstream_monitor_records", "Records read by the drift monitor", ["topic"],
                               registry=registry)
        self.fraud_rate = Gauge("fraudstream_fraud_rate", "Share of fraud among labels arrived in the window",
                                ["window"], registry=registry)
        self.score_share = Gauge("fraudstream_score_share",
                                 "Share of scores per bin in the shortest window, live and reference",
                                 ["source", "bin"], registry=registry)
        self.group_lag = Gauge("fraudstream_consumer_group_lag", "Worker group's messages behind the end",
                               ["group", "topic", "partition"], registry=registry)


class DriftMonitor:
    def __init__(self, options: MonitorOptions, *, redis: Redis | RedisCluster | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.options = options
        self.catalog = ReferenceCatalog(options.model_dir) if options.model_dir else None
        self.state = MonitorState(options.drift, self.catalog)
        self.registry = registry or CollectorRegistry()
        self.metrics = MonitorMetrics(self.registry)
        self.sketch = FeatureSketchReader(redis, bucket_s=options.drift.bucket_s,
                                          namespace=options.lag_group or DEFAULT_NAMESPACE,
                                          horizon_s=options.drift.horizon_s) if redis is not None else None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_retrain = -float("inf")
        self._positions: dict[TopicPartition, int] = {}
        self.ready = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        # idempotent: a retried send after a leader change is neither duplicated nor reordered
        self._producer = self.options.connection.producer(acks="all", enable_idempotence=True)
        await self._producer.start()
        self._tasks = [asyncio.create_task(self._supervised(self._consume), name="drift-consume"),
                       asyncio.create_task(self._evaluate_forever(), name="drift-evaluate")]
        if self.options.lag_group:
            self._tasks.append(asyncio.create_task(self._lag_forever(), name="drift-lag"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._producer is not None:
            await self._producer.stop()

    # --- consuming ---------------------------------------------------------------------------------
    async def _supervised(self, run: Callable[[], Awaitable[None]]) -> None:
        """Restart the consumer after an unexpected error (e.g. the broker went away for long), with
        backoff: 2, 4 ... 30 s after runs that failed within a minute, 1 s after a longer run. The windows
        keep what they had and the restart resumes after the last record read."""
        started = 0.0
        quick = 0  # failures in a row of runs shorter than a minute

        async def attempt() -> None:
            nonlocal started
            started = time.monotonic()
            await run()

        def delay(_: RetryCallState) -> float:
            nonlocal quick
            quick = 0 if time.monotonic() - started > 60 else quick + 1
            return min(2.0**quick, 30.0) if quick else 1.0

        def report(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.error("drift monitor consumer failed; restarting in %.0f s", state.upcoming_sleep, exc_info=exc)

        # Exception, not BaseException: a cancelled task stops
        retrying = AsyncRetrying(retry=retry_if_exception_type(Exception), wait=delay, before_sleep=report)
        await retrying(attempt)

    async def _consume(self) -> None:
        t = self.options.topics
        consumer = self.options.connection.consumer(enable_auto_commit=False, auto_offset_reset="latest")
        try:
            # start() inside the try: a monitor stopped while its consumer connects (the dashboard's port was
            # taken) still closes it
            await consumer.start()
            await self._assign(consumer, [t.scored, t.dead_letter, t.labels])
            self.ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, messages in batches.items():
                    for m in messages:
                        self._ingest(tp.topic, m.value, m.timestamp / 1000.0)
                    if messages:
                        self._positions[tp] = messages[-1].offset + 1
                    self.metrics.records.labels(topic=tp.topic).inc(len(messages))
        finally:
            await consumer.stop()

    async def _assign(self, consumer: AIOKafkaConsumer, topics: list[str]) -> None:
        parts: list[TopicPartition] = []
        deadline = time.monotonic() + 60.0
        admin = self.options.connection.admin()
        try:
            await admin.start()
            while True:
                described = await admin.describe_topics(topics)
                parts = [TopicPartition(t["topic"], p["partition"]) for t in described if not t["error_code"]
                         for p in t["partitions"]]
                # The scored topic is created by the first worker; wait for it rather than watch nothing.
                if any(tp.topic == topics[0] for tp in parts) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(1.0)
        finally:
            await admin.close()
        consumer.assign(parts)
        since_ms = int((time.time() - self.options.drift.horizon_s) * 1000)
        offsets = await consumer.offsets_for_times(dict.fromkeys(parts, since_ms))
        ends = await consumer.end_offsets(parts)
        for tp in parts:
            found_offset = offsets.get(tp)
            start = found_offset.offset if found_offset is not None else ends[tp]
            # After a restart of the consumer, resume where it stopped: never count a record twice.
            consumer.seek(tp, self._positions.get(tp, start))

    def _ingest(self, topic: str, value: bytes | None, at: float) -> None:
        if value is None:
            return
        t, state = self.options.topics, self.state
        try:
            record = orjson.loads(value)
            if topic == t.scored:
                scored_at = record.get("scored_at")
                when = _epoch(scored_at) if isinstance(scored_at, str) else at
                state.add_scored(
                    score=float(record["score"]), version=record.get("model_version"),
                    label=record.get("model_label"), decision=str(record.get("decision")),
                    degraded=bool(record.get("degraded")),
                    end_to_end_ms=float((record.get("latencies") or {}).get("end_to_end_ms", 0.0)), at=when,
                )
            elif topic == t.dead_letter:
                state.add_dead_letter(at)
            elif topic == t.labels:
                state.add_label(is_fraud=bool(record.get("is_fraud")), at=at)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            # A record the monitor cannot read is skipped: the worker's DLQ handles bad input, not us. Only
            # the error's kind is logged: its text may quote the record (a label's card number, say).
            log.debug("skipping an unreadable %s record (%s)", topic, type(exc).__name__)

    # --- evaluating --------------------------------------------------------------------------------
    async def _evaluate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.evaluate_every_s)
            try:
                await self.evaluate_once()
            except Exception:
                log.exception("drift evaluation failed; retrying at the next interval")

    async def evaluate_once(self, now: float | None = None) -> list[DriftAlert]:
        now = time.time() if now is None else now
        features = None
        feature_reference = self.catalog.get(self.catalog.stable_version()) if self.catalog else None
        if self.sketch is not None and feature_reference is not None and feature_reference.features:
            await self.sketch.refresh(feature_reference, now)
            features = self.sketch.series()
        alerts = self.state.evaluate(now, features, feature_reference)
        for r in self.state.latest:
            self.metrics.psi.labels(subject=r.subject, window=r.window).set(r.psi)
            self.metrics.ks.labels(subject=r.subject, window=r.window).set(r.ks)
        self._export_score_shares(now)
        for spec in self.options.drift.windows:
            total, fraud = self.state.labels.window(spec.seconds, now)
            if total:
                self.metrics.fraud_rate.labels(window=spec.name).set(fraud / total)
        for alert in alerts:
            await self.publish_alert(alert)
        return alerts

    def _export_score_shares(self, now: float) -> None:
        view = snapshot(self.state, now).get("score")
        if not isinstance(view, dict):
            return
        edges, live, total = view["edges"], view["live"], max(1, view["live_total"])
        reference = view["reference"] or [None] * len(live)
        for i, (count, ref) in enumerate(zip(live, reference, strict=True)):
            bin_label = f"{edges[i]:.2f}-{edges[i + 1]:.2f}"
            self.metrics.score_share.labels(source="live", bin=bin_label).set(count / total)
            if ref is not None:
                self.metrics.score_share.labels(source="reference", bin=bin_label).set(ref)

    async def publish_alert(self, alert: DriftAlert) -> None:
        assert self._producer is not None
        topics = self.options.topics
        log.warning("sustained drift: %s over %s, PSI %.3f > %.3f (model version %s)",
                    alert.subject, alert.window, alert.psi, alert.threshold, alert.model_version)
        await self._producer.send_and_wait(topics.drift_alerts, encode(alert), key=alert.subject.encode())
        self.metrics.alerts.labels(subject=alert.subject, window=alert.window).inc()
        drift = self.options.drift
        if drift.retrain and time.monotonic() - self._last_retrain >= drift.retrain_cooldown_s:
            self._last_retrain = time.monotonic()
            reason = (f"drift: {alert.subject} PSI {alert.psi:.3f} over {alert.window} "
                      f"(alert {alert.alert_id})")
            await self.request_retrain("drift-monitor", reason)

    async def request_retrain(self, requested_by: str, reason: str) -> RetrainRequest:
        assert self._producer is not None
        request = RetrainRequest(request_id=f"drift-{uuid.uuid4().hex[:16]}", requested_by=requested_by,
                                 reason=reason[:1000])
        await self._producer.send_and_wait(self.options.topics.retrain_requests, encode(request),
                                           key=request.request_id.encode())
        return request

    def snapshot(self) -> dict[str, Any]:
        sketch = self.sketch
        rows = (lambda seconds: sketch.rows(seconds, time.time())) if sketch is not None else None
        return snapshot(self.state, time.time(), feature_rows=rows)

    # --- worker consumer-group lag -----------------------------------------------------------------
    async def _lag_forever(self) -> None:
        group = self.options.lag_group
        assert group is not None
        admin = self.options.connection.admin()
        probe = self.options.connection.consumer(enable_auto_commit=False)
        try:
            await admin.start()
            await probe.start()
            while True:
                try:
                    committed = await admin.list_consumer_group_offsets(group)
                    parts = [tp for tp in committed if tp.topic == self.options.topics.transactions]
                    ends = await probe.end_offsets(parts) if parts else {}
                    for tp in parts:
                        lag = max(0, ends[tp] - committed[tp].offset)
                        self.metrics.group_lag.labels(group=group, topic=tp.topic, partition=str(tp.partition)
                                                      ).set(lag)
                except Exception as exc:  # the broker being away is reported, not fatal
                    log.warning("consumer lag of %s unavailable: %s", group, exc)
                await asyncio.sleep(self.options.lag_every_s)
        finally:
            await probe.stop()
            await admin.close()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()
