"""The monitor's windows, evaluation and alert rule, without a broker."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitoring.drift import DriftConfig, MonitorState, snapshot
from monitoring.reference import ReferenceCatalog
from monitoring.windows import BucketSeries, WindowSpec
from tests.fixtures.drift import write_reference

T0 = 1_800_000_000.0


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "fraud_dnn"
    rng = np.random.default_rng(0)
    write_reference(directory, 1, scores=rng.beta(2, 8, 5000))
    return directory


def config(**overrides: Any) -> DriftConfig:
    base = DriftConfig(windows=(WindowSpec("short", 30), WindowSpec("long", 300)), bucket_s=1.0,
                       psi_threshold=0.2, consecutive=3, min_samples=100)
    return dataclasses.replace(base, **overrides)


def feed(state: MonitorState, scores: np.ndarray, at: float, version: int | None = 1) -> None:
    for s in scores:
        state.add_scored(score=float(s), version=version, label="stable", decision="approve", degraded=False,
                         end_to_end_ms=12.0, at=at)


def test_window_parsing() -> None:
    assert WindowSpec.parse_many("5m=300, 1h=3600") == (WindowSpec("5m", 300), WindowSpec("1h", 3600))
    assert WindowSpec.parse_many("30") == (WindowSpec("30s", 30),)
    with pytest.raises(ValueError, match="positive"):
        WindowSpec.parse_many("x=-1")


def test_bucket_series_slides_and_prunes() -> None:
    series = BucketSeries(2, bucket_s=10, horizon_s=60)
    series.add(np.array([1, 0]), T0)
    series.add(np.array([0, 2]), T0 + 25)
    assert series.window(30, T0 + 25).tolist() == [1, 2]
    assert series.window(10, T0 + 25).tolist() == [0, 2]
    series.prune(T0 + 100)
    assert series.window(300, T0 + 100).tolist() == [0, 0]


def test_normal_traffic_raises_no_alert_and_shifted_traffic_raises_one(model_dir: Path) -> None:
    state = MonitorState(config(), ReferenceCatalog(model_dir))
    rng = np.random.default_rng(1)
    for step in range(10):
        feed(state, rng.beta(2, 8, 50), T0 + step)
        assert state.evaluate(T0 + step) == []
    assert state.latest and max(r.psi for r in state.latest) < 0.05
    alerts = []
    for step in range(10, 60):
        feed(state, rng.beta(5, 3, 50), T0 + step)
        alerts += state.evaluate(T0 + step)
    # One alert per window per episode, after `consecutive` evaluations above the threshold.
    assert sorted(a.window for a in alerts) == ["long", "short"]
    short = next(a for a in alerts if a.window == "short")
    assert short.subject == "score" and short.model_version == 1 and short.psi > 0.2 and short.ks > 0.2
    assert short.at.tzinfo is not None


def test_too_few_samples_are_not_evaluated_and_break_the_streak(model_dir: Path) -> None:
    one_window = config(consecutive=2, windows=(WindowSpec("short", 30),))
    state = MonitorState(one_window, ReferenceCatalog(model_dir))
    rng = np.random.default_rng(2)
    feed(state, rng.beta(5, 3, 99), T0)
    assert state.evaluate(T0) == [] and state.latest == []
    feed(state, rng.beta(5, 3, 200), T0 + 1)
    assert state.evaluate(T0 + 1) == []  # first evaluation above: streak 1 of 2
    assert state.evaluate(T0 + 100) == []  # the short window emptied: streak broken
    feed(state, rng.beta(5, 3, 200), T0 + 101)
    assert state.evaluate(T0 + 101) == []
    assert [a.window for a in state.evaluate(T0 + 102)] == ["short"]


def test_a_version_without_reference_is_shown_but_not_judged(model_dir: Path) -> None:
    state = MonitorState(config(), ReferenceCatalog(model_dir))
    feed(state, np.full(500, 0.9), T0, version=2)
    assert state.evaluate(T0 + 1) == []
    view = snapshot(state, T0 + 1)
    assert view["score"] == {"model_version": 2, "edges": pytest.approx(np.linspace(0, 1, 21).tolist()),
                             "live": [0] * 18 + [500, 0], "live_total": 500, "reference": None}


def test_a_reference_written_later_is_picked_up(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    (directory / "1").mkdir(parents=True)
    state = MonitorState(config(consecutive=1), ReferenceCatalog(directory))
    feed(state, np.full(200, 0.95), T0)
    assert state.evaluate(T0) == []
    write_reference(directory, 1, scores=np.random.default_rng(0).beta(2, 8, 1000))
    feed(state, np.full(200, 0.95), T0 + 1)
    assert [a.window for a in state.evaluate(T0 + 1)] == ["short", "long"]


def test_snapshot_has_every_panel(model_dir: Path) -> None:
    state = MonitorState(config(), ReferenceCatalog(model_dir))
    feed(state, np.random.default_rng(3).beta(2, 8, 300), T0)
    state.add_dead_letter(T0)
    state.add_label(is_fraud=True, at=T0)
    state.add_label(is_fraud=False, at=T0)
    state.evaluate(T0 + 1)
    view = snapshot(state, T0 + 1)
    assert view["score"]["live_total"] == 300
    timeline = view["timeline"]  # the bucket T0 is the last complete one at T0 + 1
    assert timeline["times"][-1] == T0 and timeline["scored"][-1] == 300.0 and timeline["dead_letters"][-1] == 1.0
    assert timeline["decisions"] == {"approve": [0.0] * 29 + [300.0]}
    assert view["fraud_rate"]["short"] == {"labels": 2.0, "rate": 0.5}
    assert view["models"] == [{"version": 1, "label": "stable", "count": 300.0, "share": 1.0}]
    assert view["latency_ms"]["p50"] == pytest.approx(12.0, rel=0.2)
    assert set(view["psi_history"]) == {"score"}


def test_timeline_has_every_bucket_and_a_stopped_stream_reads_as_zeros(model_dir: Path) -> None:
    state = MonitorState(config(windows=(WindowSpec("short", 10),)), ReferenceCatalog(model_dir))
    assert snapshot(state, T0)["stream"]["status"] == "waiting"
    feed(state, np.full(5, 0.1), T0 + 2)
    feed(state, np.full(3, 0.1), T0 + 5)  # nothing in between: buckets T0+3, T0+4 are empty
    state.add_scored(score=0.95, version=1, label="stable", decision="decline", degraded=False,
                     end_to_end_ms=40.0, at=T0 + 5)
    state.add_scored(score=0.7, version=1, label="stable", decision="step-up-auth", degraded=True,
                     end_to_end_ms=40.0, at=T0 + 5)
    state.add_dead_letter(T0 + 3)
    live = snapshot(state, T0 + 6.5)
    timeline = live["timeline"]
    assert timeline["times"] == [T0 - 4 + i for i in range(10)] and timeline["end"] == T0 + 6
    assert timeline["scored"] == [0, 0, 0, 0, 0, 0, 5, 0, 0, 5]
    assert timeline["dead_letters"] == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    assert timeline["degraded"][-1] == 1
    # whatever the policy emits, in the dashboard's order
    assert list(timeline["decisions"]) == ["approve", "decline", "step-up-auth"]
    assert timeline["decisions"]["decline"][-1] == 1
    assert timeline["latency_p50_ms"][6] is not None and timeline["latency_p50_ms"][7] is None
    assert live["stream"]["status"] == "live" and live["stream"]["last_scored_at"] == T0 + 5

    later = snapshot(state, T0 + 60)  # the stream stopped: zeros up to now, and said so
    assert later["timeline"]["scored"] == [0] * 10 and later["timeline"]["end"] == T0 + 60
    assert later["stream"]["status"] == "stopped" and later["stream"]["idle_s"] == 55
