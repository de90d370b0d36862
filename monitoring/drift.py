"""The drift monitor's state and evaluation, free of Kafka and HTTP so it is tested directly.

Scores are binned on the edges of the reference of the record's own model version (canary and stable
are compared each with its own training distribution). Features come from the worker's sketch in Redis
(see ``monitoring/sketch.py``) and are compared with the stable version's reference. Drift is *sustained*
when PSI stays above the threshold for ``consecutive`` evaluations in a row; one alert is raised per
episode (the streak must fall below the threshold before the same subject and window alert again).
"""

from __future__ import annotations

import bisect
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from monitoring.reference import SCORE, Histogram, Reference, ReferenceCatalog
from monitoring.stats import ks_statistic, psi
from monitoring.windows import BucketSeries, WindowSpec
from schemas.drift import DriftAlert

DEFAULT_SCORE_EDGES = np.linspace(0.0, 1.0, 21)
LATENCY_EDGES_MS = np.concatenate([[0.0], np.geomspace(0.5, 120_000, 80), [np.inf]])
_LATENCY_EDGE_LIST = LATENCY_EDGES_MS.tolist()
DECISIONS = ("approve", "review", "decline")
"""The policy's decisions in the order the dashboard lists them; any other decision a policy emits is
counted too and listed after these."""
STOPPED_AFTER_BUCKETS = 2
"""No scored record for this many buckets (and at least 15 s) and the dashboard says the stream stopped."""


@dataclass(frozen=True)
class DriftConfig:
    windows: tuple[WindowSpec, ...] = (
        WindowSpec("5m", 300), WindowSpec("1h", 3600), WindowSpec("1d", 86_400),
    )
    bucket_s: float = 10.0
    psi_threshold: float = 0.2
    consecutive: int = 3
    min_samples: int = 200
    retrain: bool = False
    retrain_cooldown_s: float = 6 * 3600.0
    """At most one retrain request per cooldown: one shift drifts many features at once."""
    history_points: int = 360
    seasonal: frozenset[str] = frozenset({"tx_hour", "tx_is_night", "tx_is_weekend"})
    """Features that follow the clock: a short window of them never looks like the whole training
    period, so their PSI is shown but never raises an alert."""

    @property
    def horizon_s(self) -> float:
        return max(w.seconds for w in self.windows)


@dataclass(frozen=True, slots=True)
class Evaluation:
    subject: str
    window: str
    psi: float
    ks: float
    samples: int
    model_version: int | None


def bin_index(value: float, edges: list[float]) -> int:
    """The bin of one value (same rule as ``stats.bin_counts``), without a numpy call per record."""
    return min(max(bisect.bisect_right(edges, value) - 1, 0), len(edges) - 2)


@dataclass
class _ScoreSeries:
    edges: np.ndarray
    series: BucketSeries

    def __post_init__(self) -> None:
        self.edge_list: list[float] = self.edges.tolist()


@dataclass
class MonitorState:
    config: DriftConfig
    catalog: ReferenceCatalog | None
    scores: dict[int | None, _ScoreSeries] = field(default_factory=dict)
    alerts: deque[DriftAlert] = field(default_factory=lambda: deque(maxlen=50))
    history: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    latest: list[Evaluation] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=lambda: {"scored": 0, "dead_lettered": 0, "labels": 0})
    evaluations: int = 0
    _streaks: dict[tuple[str, str, int | None], int] = field(default_factory=dict)
    _alerted: set[tuple[str, str, int | None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        c = self.config

        def series(bins: int) -> BucketSeries:
            return BucketSeries(bins, bucket_s=c.bucket_s, horizon_s=c.horizon_s)

        self.throughput = series(1)
        self.dead_letters = series(1)
        self.degraded = series(1)
        self.decisions: dict[str, BucketSeries] = {}
        self.last_seen: dict[str, float] = {}
        """Latest record time per kind (``scored``, ``dead_letter``, ``label``): a stopped stream is told
        apart from a quiet one by it."""
        self.labels = series(2)  # [labels, fraud labels]
        self.latency = series(LATENCY_EDGES_MS.size - 1)
        self.models: dict[tuple[int | None, str | None], BucketSeries] = {}
        self._series = series

    # --- ingestion (one call per consumed record) --------------------------------------------------
    def _score_series(self, version: int | None, *, recheck: bool = False) -> _ScoreSeries:
        current = self.scores.get(version)
        if current is not None and not recheck:
            return current  # the reference file is re-checked once per evaluation, not per record
        reference = self.catalog.get(version) if self.catalog else None
        edges = reference.score.edges if reference and reference.score else DEFAULT_SCORE_EDGES
        if current is None or current.edges.shape != edges.shape or not np.array_equal(current.edges, edges):
            # A reference added (or changed) after records arrived: start the live window afresh on its
            # edges rather than compare counts binned on other edges.
            current = self.scores[version] = _ScoreSeries(edges, self._series(edges.size - 1))
        return current

    def add_scored(self, *, score: float, version: int | None, label: str | None, decision: str,
                   degraded: bool, end_to_end_ms: float, at: float) -> None:
        target = self._score_series(version)
        target.series.add_index(bin_index(score, target.edge_list), at)
        self.throughput.add_index(0, at)
        if degraded:
            self.degraded.add_index(0, at)
        if decision not in self.decisions:
            self.decisions[decision] = self._series(1)
        self.decisions[decision].add_index(0, at)
        self._seen("scored", at)
        self.latency.add_index(bin_index(end_to_end_ms, _LATENCY_EDGE_LIST), at)
        key = (version, label)
        if key not in self.models:
            self.models[key] = self._series(1)
        self.models[key].add_index(0, at)
        self.totals["scored"] += 1

    def add_dead_letter(self, at: float) -> None:
        self.dead_letters.add_index(0, at)
        self.totals["dead_lettered"] += 1
        self._seen("dead_letter", at)

    def _seen(self, kind: str, at: float) -> None:
        if at > self.last_seen.get(kind, -math.inf):
            self.last_seen[kind] = at

    def add_label(self, *, is_fraud: bool, at: float) -> None:
        self.labels.add(np.array([1.0, 1.0 if is_fraud else 0.0]), at)
        self.totals["labels"] += 1
        self._seen("label", at)

    # --- evaluation --------------------------------------------------------------------------------
    def evaluate(
        self, now: float, features: dict[str, BucketSeries] | None = None,
        feature_reference: Reference | None = None,
    ) -> list[DriftAlert]:
        """Compute PSI/KS for every subject and window; return the alerts that became due."""
        results: list[Evaluation] = []
        for version in list(self.scores):
            target = self._score_series(version, recheck=True)
            reference = self.catalog.get(version) if self.catalog else None
            if reference and reference.score is not None:
                results.extend(self._compare(SCORE, reference.score, target.series, version, now))
        if features and feature_reference:
            for name, hist in feature_reference.features.items():
                if name in features:
                    results.extend(self._compare(name, hist, features[name], feature_reference.version, now))
        self.latest = results
        self.evaluations += 1
        for series in self._all_series():
            series.prune(now)
        return self._alerts_due(results, now)

    def _compare(self, subject: str, reference: Histogram, live: BucketSeries, version: int | None,
                 now: float) -> Iterable[Evaluation]:
        for spec in self.config.windows:
            counts = live.window(spec.seconds, now)
            n = int(counts.sum())
            if n < self.config.min_samples:
                continue  # too few records for a stable estimate: neither drift nor all-clear
            result = Evaluation(subject, spec.name, psi(reference.counts, counts),
                                ks_statistic(reference.counts, counts), n, version)
            if spec == self.config.windows[0]:
                points = self.history.setdefault(subject, deque(maxlen=self.config.history_points))
                points.append((now, round(result.psi, 6)))
            yield result

    def _alerts_due(self, results: list[Evaluation], now: float) -> list[DriftAlert]:
        due: list[DriftAlert] = []
        seen: set[tuple[str, str, int | None]] = set()
        for r in results:
            if r.subject in self.config.seasonal:
                continue
            key = (r.subject, r.window, r.model_version)
            seen.add(key)
            if r.psi <= self.config.psi_threshold:
                self._streaks[key] = 0
                self._alerted.discard(key)
                continue
            self._streaks[key] = self._streaks.get(key, 0) + 1
            if self._streaks[key] >= self.config.consecutive and key not in self._alerted:
                self._alerted.add(key)
                alert = DriftAlert(
                    alert_id=uuid.uuid4().hex, subject=r.subject, window=r.window, psi=r.psi, ks=r.ks,
                    threshold=self.config.psi_threshold, model_version=r.model_version,
                    at=datetime.fromtimestamp(now, UTC),
                )
                self.alerts.appendleft(alert)
                due.append(alert)
        # A window that fell below min_samples breaks the streak: "sustained" needs evidence each time.
        for key in [k for k in self._streaks if k not in seen]:
            self._streaks[key] = 0
        return due

    def _all_series(self) -> Iterable[BucketSeries]:
        yield from (self.throughput, self.dead_letters, self.degraded, self.labels)
        yield from self.decisions.values()
        yield self.latency
        yield from (s.series for s in self.scores.values())
        yield from self.models.values()


def percentile(counts: np.ndarray, edges: np.ndarray, q: float) -> float | None:
    """The upper edge of the bin holding quantile ``q`` (a conservative estimate), None if empty."""
    total = counts.sum()
    if total <= 0:
        return None
    index = int(np.searchsorted(np.cumsum(counts), q * total))
    upper = edges[min(index + 1, edges.size - 1)]
    return float(upper if math.isfinite(upper) else edges[-2])


def snapshot(state: MonitorState, now: float, *, feature_rows: Callable[[float], float] | None = None
             ) -> dict[str, Any]:
    """The dashboard's JSON: everything the page draws, for the first (shortest) window."""
    c = state.config
    window = c.windows[0]
    buckets = max(1, int(window.seconds // c.bucket_s))

    score_view: dict[str, Any] | None = None
    busiest = max(state.scores.items(), key=lambda kv: kv[1].series.window(window.seconds, now).sum(),
                  default=None)
    if busiest is not None:
        version, target = busiest
        reference = state.catalog.get(version) if state.catalog else None
        live = target.series.window(window.seconds, now)
        ref = reference.score.counts if reference and reference.score else None
        score_view = {
            "model_version": version, "edges": [float(e) for e in target.edges],
            "live": [int(x) for x in live], "live_total": int(live.sum()),
            "reference": None if ref is None else [float(x) for x in ref / max(ref.sum(), 1.0)],
        }
    lat = state.latency.window(window.seconds, now)
    labels = {w.name: state.labels.window(w.seconds, now).tolist() for w in c.windows}
    model_counts = {k: float(s.window(window.seconds, now)[0]) for k, s in state.models.items()}
    model_total = sum(model_counts.values()) or 1.0
    return {
        "now": now, "window": window.name, "windows": [w.name for w in c.windows],
        "config": {"psi_threshold": c.psi_threshold, "consecutive": c.consecutive,
                   "min_samples": c.min_samples, "bucket_s": c.bucket_s, "retrain": c.retrain},
        "score": score_view,
        "psi_history": {s: [list(p) for p in pts] for s, pts in state.history.items()},
        "latest": [asdict(r) for r in state.latest],
        "timeline": timeline(state, now, buckets),
        "stream": stream_state(state, now),
        "latency_ms": {"p50": percentile(lat, LATENCY_EDGES_MS, 0.5),
                       "p99": percentile(lat, LATENCY_EDGES_MS, 0.99)},
        "decisions": {d: float(state.decisions[d].window(window.seconds, now)[0]) for d in decision_order(state)},
        "fraud_rate": {name: {"labels": v[0], "rate": (v[1] / v[0]) if v[0] else None}
                       for name, v in labels.items()},
        "models": [{"version": k[0], "label": k[1], "count": v, "share": v / model_total}
                   for k, v in sorted(model_counts.items(), key=lambda kv: -kv[1]) if v > 0],
        "feature_rows": feature_rows(window.seconds) if feature_rows else None,
        "alerts": [a.model_dump(mode="json") for a in state.alerts],
        "totals": dict(state.totals), "evaluations": state.evaluations,
    }


def decision_order(state: MonitorState) -> list[str]:
    known = [d for d in DECISIONS if d in state.decisions]
    return known + sorted(d for d in state.decisions if d not in DECISIONS)


def timeline(state: MonitorState, now: float, buckets: int) -> dict[str, Any]:
    """Per-bucket series over the last ``buckets`` *complete* buckets, every bucket present: an empty bucket
    is a zero (not a gap the page would bridge), and the series run up to now, so a stream that stopped
    reads as zeros. The bucket in progress is left out: its partial count would read as a falling rate."""
    b = state.config.bucket_s
    last = math.floor(now / b) - 1
    keys = range(last - buckets + 1, last + 1)
    span = (buckets + 2) * b  # more than the range (float rounding at its edge); ``keys`` picks the buckets
    end = (last + 1) * b

    def counts(series: BucketSeries) -> list[float]:
        per = series.per_bucket(span, end)
        return [float(per[k][0]) if k in per else 0.0 for k in keys]

    latency = state.latency.per_bucket(span, end)
    p50: list[float | None] = []
    p99: list[float | None] = []
    for k in keys:
        vector = latency.get(k)
        p50.append(percentile(vector, LATENCY_EDGES_MS, 0.5) if vector is not None else None)
        p99.append(percentile(vector, LATENCY_EDGES_MS, 0.99) if vector is not None else None)
    return {
        "bucket_s": b, "start": keys[0] * b, "end": end, "times": [k * b for k in keys],
        "scored": counts(state.throughput), "dead_letters": counts(state.dead_letters),
        "degraded": counts(state.degraded),
        "decisions": {d: counts(state.decisions[d]) for d in decision_order(state)},
        "latency_p50_ms": p50, "latency_p99_ms": p99,
    }


def stream_state(state: MonitorState, now: float) -> dict[str, Any]:
    """``live`` / ``stopped`` (with since when) / ``waiting`` (nothing scored yet) for the page's header."""
    last = state.last_seen.get("scored")
    quiet_after = max(STOPPED_AFTER_BUCKETS * state.config.bucket_s, 15.0)
    status = "waiting" if last is None else "live" if now - last <= quiet_after else "stopped"
    return {"status": status, "last_scored_at": last, "last_dead_letter_at": state.last_seen.get("dead_letter"),
            "idle_s": None if last is None else max(0.0, now - last), "stopped_after_s": quiet_after}
