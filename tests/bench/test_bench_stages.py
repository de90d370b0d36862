"""``bench e2e``'s per-stage breakdown: each stage's quantiles over the scored records' ``timings``, and the
rest of each record's send → arrival time."""

from __future__ import annotations

import orjson
import pytest

from fraudstream.bench.stages import REST, STAGES, stage_breakdown


def _record(timings: dict[str, float | None] | None) -> bytes:
    return orjson.dumps({"transaction_id": "x", "timings": timings})


def test_breakdown_has_each_stage_and_the_rest_of_the_round_trip() -> None:
    stages = {"fetch_ms": 2.0, "batch_wait_ms": 0.5, "features_ms": 1.0, "score_wait_ms": 0.0, "model_ms": 1.5}
    values = {f"t{i}".encode(): _record({**stages, "fetch_ms": 2.0 + i}) for i in range(100)}
    values[b"old"] = _record(None)  # a record of a worker without timings: left out
    sent = {k: 100.0 for k in values}
    arrived = {k: 100.0 + (10.0 + i) / 1000 for i, k in enumerate(values)}
    out = stage_breakdown(values, sent, arrived)
    assert list(out) == [*STAGES, REST]
    assert out["fetch_ms"]["p50"] == pytest.approx(51.5) and out["fetch_ms"]["max"] == pytest.approx(101.0)
    assert out["model_ms"] == {"p50": 1.5, "p99": 1.5, "max": 1.5}
    # every record: 10 + i ms in total, 5 + i ms of it in the worker's stages
    assert out[REST] == {"p50": 5.0, "p99": 5.0, "max": 5.0}


def test_a_record_without_a_kafka_timestamp_counts_in_the_other_stages() -> None:
    values = {b"a": _record({"fetch_ms": None, "batch_wait_ms": 1.0, "features_ms": 1.0, "score_wait_ms": 1.0,
                             "model_ms": 1.0})}
    out = stage_breakdown(values, {b"a": 0.0}, {b"a": 0.010})
    assert "fetch_ms" not in out and out["batch_wait_ms"]["p50"] == 1.0 and out[REST]["p50"] == 6.0
    assert stage_breakdown({}, {}, {}) == {}
