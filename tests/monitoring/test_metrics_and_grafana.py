"""The worker's /metrics endpoint exposes every family; the Grafana dashboard is valid and only queries
metrics that exist."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from monitoring.metrics import BatchOutcomeLike, WorkerMetrics
from monitoring.service import MonitorMetrics
from schemas.scored import Latencies
from streams.pipeline import BatchOutcome, RecordStages

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboards" / "fraudstream.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",)}




def series_names(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_worker_metrics_endpoint_exposes_every_family() -> None:
    metrics = WorkerMetrics()
    port = metrics.serve(0, host="127.0.0.1")
    latencies = Latencies(validate_ms=0.4, features_ms=3.0, model_ms=7.5, end_to_end_ms=42.0)
    outcome = BatchOutcome(consumed=12, scored=10, dead_lettered=2,
                           reasons={"decode:json": 1, "validation:amount:greater_than": 1},
                           decisions={"approve": 9, "decline": 1}, latencies=latencies)
    metrics.observe_batch(outcome, publish_s=0.002)
    metrics.observe_models({("fraud_dnn", 3, "stable"): 9, ("fraud_dnn", 4, "canary"): 1})
    metrics.set_degraded(False)
    metrics.backend_error("redis", "ConnectionError")
    metrics.set_consumer_lag("transactions", 0, 17)
    metrics.model_rejected("fraud_dnn", 5, "non_finite")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    expected = [
        "fraudstream_transactions_consumed_total 12.0",
        "fraudstream_transactions_scored_total 10.0",
        'fraudstream_transactions_dead_lettered_total{reason="decode:json"} 1.0',
        'fraudstream_decisions_total{decision="approve"} 9.0',
        'fraudstream_stage_latency_seconds_count{stage="model"} 1.0',
        'fraudstream_stage_latency_seconds_count{stage="publish"} 1.0',
        'fraudstream_end_to_end_latency_seconds_bucket{le="0.05"} 1.0',
        'fraudstream_batch_size_bucket{le="16.0"} 1.0',
        'fraudstream_model_info{label="canary",model="fraud_dnn",version="4"} 1.0',
        'fraudstream_scored_by_model_total{label="stable",model="fraud_dnn",version="3"} 9.0',
        "fraudstream_degraded 0.0",
        'fraudstream_backend_errors_total{backend="redis",kind="ConnectionError"} 1.0',
        'fraudstream_consumer_lag{partition="0",topic="transactions"} 17.0',
        'fraudstream_model_rejected_total{model="fraud_dnn",reason="non_finite",version="5"} 1.0',
    ]
    missing = [line for line in expected if line not in text]
    assert not missing, text


def test_the_workers_own_batch_outcome_fits_the_hook() -> None:
    """Contract with streams/: the pipeline's BatchOutcome is what observe_batch takes."""
    metrics = WorkerMetrics()
    outcome: BatchOutcomeLike = BatchOutcome(consumed=3, scored=2, dead_lettered=1, reasons={"decode:json": 1},
                                             decisions={"approve": 2})
    metrics.observe_batch(outcome)
    assert metrics.registry.get_sample_value("fraudstream_transactions_consumed_total") == 3
    assert metrics.registry.get_sample_value("fraudstream_decisions_total", {"decision": "approve"}) == 2


def test_grafana_dashboard_is_valid_and_queries_existing_metrics() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    known = series_names(WorkerMetrics().registry) | series_names(_monitor_registry())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 12
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    used: set[str] = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, panel["title"]
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys() and grid["x"] + grid["w"] <= 24
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            used.update(re.findall(r"\bfraudstream_[a-z_]+", target["expr"]))
    unknown = used - known
    assert not unknown, f"panels query metrics nobody exports: {sorted(unknown)}"
    # Every family the worker exports has a panel.
    worker_families = {f.name for f in WorkerMetrics().registry.collect()}
    shown = {name for name in worker_families if any(u.startswith(name) for u in used)}
    assert shown == worker_families, worker_families - shown
    window = dashboard["templating"]["list"][0]
    assert window["name"] == "window" and "fraudstream_drift_psi" in window["definition"]


def _monitor_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    MonitorMetrics(registry)
    return registry


def test_record_stages_count_every_record_once_per_stage() -> None:
    """Per-record values land one observation each (a value on a bucket's bound counts in it, as Prometheus's
    ``le``); a batch-wide value counts once per record of the batch."""
    metrics = WorkerMetrics()
    stages = RecordStages(fetch_s=np.array([0.0004, 0.001, 0.003]), batch_wait_s=np.array([0.0, 0.0, 0.02, 7.0]),
                          features_s=0.004, score_wait_s=0.0, model_s=0.002, publish_s=0.03, records=4)
    metrics.observe_batch(BatchOutcome(consumed=4, scored=4, stages=stages))
    sample = metrics.registry.get_sample_value
    name = "fraudstream_record_stage_latency_seconds"
    assert sample(f"{name}_count", {"stage": "fetch"}) == 3  # one record had no Kafka timestamp
    assert sample(f"{name}_bucket", {"stage": "fetch", "le": "0.001"}) == 2
    assert sample(f"{name}_bucket", {"stage": "batch_wait", "le": "0.025"}) == 3
    assert sample(f"{name}_bucket", {"stage": "batch_wait", "le": "+Inf"}) == 4
    assert sample(f"{name}_sum", {"stage": "batch_wait"}) == np.float64(7.02)
    assert sample(f"{name}_bucket", {"stage": "model", "le": "0.001"}) == 0
    assert sample(f"{name}_bucket", {"stage": "model", "le": "0.0025"}) == 4
    assert sample(f"{name}_count", {"stage": "publish"}) == 4
    assert sample(f"{name}_sum", {"stage": "features"}) == 0.016
