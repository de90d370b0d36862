"""Prometheus metrics of the streaming worker, updated once per micro-batch.

The worker owns one ``WorkerMetrics`` and calls ``observe_batch`` after each batch was published; the
per-batch cost is a handful of counter increments and histogram observations, independent of the batch
size except for the decision/reason dictionaries the pipeline already built. ``serve`` starts the
``/metrics`` HTTP endpoint Prometheus scrapes (port 9108 in docker-compose).

Per-stage latencies are per batch (the pipeline measures stages per batch); end-to-end is the batch's
oldest event (Kafka timestamp → publish), i.e. the worst record of the batch. Beside them,
``fraudstream_record_stage_latency_seconds`` counts every published record once per stage (fetch, batch
wait, features, score wait, model, publish; ``schemas.scored.StageTimings``), so its quantiles are the
records' and the stage behind a tail shows.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.scored import Latencies

PREFIX = "fraudstream"
STAGES = ("validate", "features", "model", "publish")
# Latencies from a fraction of a millisecond (validation of a small batch) to seconds (a model outage
# being retried); end-to-end adds Kafka queueing, hence the longer tail.
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
RECORD_STAGES = ("fetch", "batch_wait", "features", "score_wait", "model", "publish")
RECORD_STAGE_BUCKETS = (0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0)


class RecordStagesLike(Protocol):
    """What ``streams.pipeline.RecordStages`` provides: seconds per record, or per batch for ``records``."""

    fetch_s: npt.NDArray[np.float64]
    batch_wait_s: npt.NDArray[np.float64]
    features_s: float
    score_wait_s: float
    model_s: float
    publish_s: float
    records: int


class WeightedHistogram(Collector):
    """A labelled Prometheus histogram that takes a batch's values at once: an array (one observation per
    value, counted with one ``searchsorted``) or one value standing for ``weight`` records. prometheus_client's
    ``Histogram.observe`` is one call, a lock and a bucket search per value: per record and stage it would
    cost the worker about as much CPU as the whole record's validation."""

    def __init__(self, name: str, documentation: str, label: str, values: tuple[str, ...],
                 buckets: tuple[float, ...], registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = {v: np.zeros(len(buckets) + 1, dtype=np.int64) for v in values}
        self._sums = dict.fromkeys(values, 0.0)
        self._lock = threading.Lock()  # /metrics is served from another thread
        registry.register(self)

    def observe_many(self, value: str, seconds: npt.NDArray[np.float64]) -> None:
        if not seconds.size:
            return
        slots = np.searchsorted(self.bounds, seconds, side="left")  # le-buckets: a value on a bound counts in it
        with self._lock:
            self._counts[value] += np.bincount(slots, minlength=len(self.bounds) + 1)
            self._sums[value] += float(seconds.sum())

    def observe(self, value: str, seconds: float, weight: int = 1) -> None:
        if weight <= 0:
            return
        slot = int(np.searchsorted(self.bounds, seconds, side="left"))
        with self._lock:
            self._counts[value][slot] += weight
            self._sums[value] += seconds * weight

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            snapshot = {v: (counts.cumsum(), self._sums[v]) for v, counts in self._counts.items()}
        for value, (cumulative, total) in snapshot.items():
            buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
            buckets.append(("+Inf", int(cumulative[-1])))
            family.add_metric([value], buckets, total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=[self.label])


class BatchOutcomeLike(Protocol):
    """What ``streams.pipeline.BatchOutcome`` provides (kept structural so monitoring does not import
    the worker)."""

    consumed: int
    scored: int
    dead_lettered: int
    reasons: dict[str, int]
    decisions: dict[str, int]
    latencies: Latencies


class WorkerMetrics:
    """The worker's metric families in their own registry (several can coexist in one test process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._server: Any = None
        r = self.registry
        self.consumed = Counter(f"{PREFIX}_transactions_consumed", "Messages read from transactions",
                                registry=r)
        self.scored = Counter(f"{PREFIX}_transactions_scored", "Records published to scored-transactions",
                              registry=r)
        self.dead_lettered = Counter(f"{PREFIX}_transactions_dead_lettered",
                                     "Records sent to the dead-letter topic", ["reason"], registry=r)
        self.decisions = Counter(f"{PREFIX}_decisions", "Scored records by decision", ["decision"],
                                 registry=r)
        self.stage_latency = Histogram(f"{PREFIX}_stage_latency_seconds", "Time per pipeline stage per batch",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.end_to_end = Histogram(f"{PREFIX}_end_to_end_latency_seconds",
                                    "Event Kafka timestamp to publication (oldest record of a batch)",
                                    buckets=E2E_BUCKETS, registry=r)
        self.record_stage = WeightedHistogram(
            f"{PREFIX}_record_stage_latency_seconds",
            "Time each published record spent in each worker stage: fetch (Kafka timestamp to fetched), batch_wait, "
            "features (Redis), score_wait, model, publish (until acknowledged)",
            "stage", RECORD_STAGES, RECORD_STAGE_BUCKETS, r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Messages per micro-batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.model_info = Gauge(f"{PREFIX}_model_info", "1 for each model version/label this worker uses",
                                ["model", "version", "label"], registry=r)
        self.scored_by_model = Counter(f"{PREFIX}_scored_by_model", "Scored records by model version/label",
                                       ["model", "version", "label"], registry=r)
        self.degraded = Gauge(f"{PREFIX}_degraded", "1 while scoring runs on rules only (model unavailable)",
                              registry=r)
        self.degraded_records = Counter(f"{PREFIX}_degraded_records", "Records scored in degraded mode",
                                        registry=r)
        self.backend_errors = Counter(f"{PREFIX}_backend_errors", "Errors talking to a backend",
                                      ["backend", "kind"], registry=r)
        self.model_rejections = Counter(f"{PREFIX}_model_rejected",
                                        "Model versions the hot reload refused, by reason (load, feature_hash, "
                                        "warmup, non_finite)", ["model", "version", "reason"], registry=r)
        self.consumer_lag = Gauge(f"{PREFIX}_consumer_lag", "Messages behind the partition end",
                                  ["topic", "partition"], registry=r)
        self._models: set[tuple[str, str, str]] = set()
        self._lag_series: set[tuple[str, int]] = set()
        self._stage = {s: self.stage_latency.labels(stage=s) for s in STAGES}

    # --- the per-batch hook ------------------------------------------------------------------------
    def observe_batch(self, outcome: BatchOutcomeLike, *, publish_s: float | None = None) -> None:
        """Call once per micro-batch, after it was published (``publish_s``: time spent publishing)."""
        self.consumed.inc(outcome.consumed)
        self.batch_size.observe(outcome.consumed)
        if outcome.scored:
            self.scored.inc(outcome.scored)
            lat = outcome.latencies
            self._stage["validate"].observe(lat.validate_ms / 1000)
            self._stage["features"].observe(lat.features_ms / 1000)
            self._stage["model"].observe(lat.model_ms / 1000)
            self.end_to_end.observe(max(0.0, lat.end_to_end_ms) / 1000)
        if publish_s is not None:
            self._stage["publish"].observe(publish_s)
        stages = getattr(outcome, "stages", None)
        if stages is not None:
            self.observe_record_stages(stages)
        for reason, n in outcome.reasons.items():
            self.dead_lettered.labels(reason=reason).inc(n)
        for decision, n in outcome.decisions.items():
            self.decisions.labels(decision=decision).inc(n)

    def observe_record_stages(self, stages: RecordStagesLike) -> None:
        """One batch's records into ``fraudstream_record_stage_latency_seconds``."""
        hist, n = self.record_stage, stages.records
        hist.observe_many("fetch", stages.fetch_s)
        hist.observe_many("batch_wait", stages.batch_wait_s)
        hist.observe("features", stages.features_s, n)
        hist.observe("score_wait", stages.score_wait_s, n)
        hist.observe("model", stages.model_s, n)
        hist.observe("publish", stages.publish_s, n)

    def observe_models(self, counts: Mapping[tuple[str, int | None, str | None], int]) -> None:
        """Records of one batch per ``(model_name, version, label)``: traffic shares and the versions in
        use. ``collections.Counter((r.model_name, r.model_version, r.model_label) for r in results)``."""
        for (model, version, label), n in counts.items():
            key = (model, "none" if version is None else str(version), label or "none")
            self.scored_by_model.labels(*key).inc(n)
            if key not in self._models:
                self._models.add(key)
                self.model_info.labels(*key).set(1)

    def set_degraded(self, degraded: bool, records: int = 0) -> None:
        self.degraded.set(1 if degraded else 0)
        if records:
            self.degraded_records.inc(records)

    def backend_error(self, backend: str, kind: str) -> None:
        """One failed call to ``backend`` (``redis``, ``kafka``, ``model``); ``kind``: a short class name."""
        self.backend_errors.labels(backend=backend, kind=kind).inc()

    def model_rejected(self, model: str, version: int, reason: str) -> None:
        """A model version refused before it served (``LocalBackend.on_rejected``)."""
        self.model_rejections.labels(model=model, version=str(version), reason=reason).inc()

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(topic=topic, partition=str(partition)).set(max(0, lag))
        self._lag_series.add((topic, partition))

    def replace_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set the lag of the partitions this worker holds now and drop the series of those it gave up."""
        for topic, partition in self._lag_series - set(lags):
            self.consumer_lag.remove(topic, str(partition))
            self._lag_series.discard((topic, partition))
        for (topic, partition), lag in lags.items():
            self.set_consumer_lag(topic, partition, lag)

    def retire_model(self, model: str, version: int | None, label: str | None) -> None:
        """Drop a version from ``model_info`` after a rollout replaced it."""
        key = (model, "none" if version is None else str(version), label or "none")
        if key in self._models:
            self._models.discard(key)
            self.model_info.remove(*key)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start ``/metrics`` in a daemon thread; returns the bound port (``port=0`` picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        """Stop serving ``/metrics`` and close its socket (a worker's shutdown; Prometheus then sees the
        target down, as it should). Metrics are pulled: there is nothing to flush."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
