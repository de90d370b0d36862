"""The monitor service's record handling and supervision, without a broker."""

from __future__ import annotations

import asyncio

import orjson

from config.settings import Topics
from monitoring.drift import DriftConfig
from monitoring.service import DriftMonitor, MonitorOptions

TOPICS = Topics()


def monitor() -> DriftMonitor:
    return DriftMonitor(MonitorOptions(bootstrap="127.0.0.1:1", topics=TOPICS, model_dir=None, drift=DriftConfig()))


def test_records_are_counted_by_topic_and_unreadable_ones_skipped() -> None:
    m = monitor()
    scored = orjson.dumps({"score": 0.7, "model_version": 2, "model_label": "canary", "decision": "review",
                           "degraded": False, "latencies": {"end_to_end_ms": 30.0},
                           "scored_at": "2026-11-25T21:00:00Z"})
    m._ingest(TOPICS.scored, scored, 0.0)
    m._ingest(TOPICS.scored, b"{not json", 0.0)
    m._ingest(TOPICS.scored, b'{"score": "high"}', 0.0)
    m._ingest(TOPICS.dead_letter, b'{"reason": "decode:json"}', 1.0)
    m._ingest(TOPICS.labels, b'{"is_fraud": true}', 1.0)
    assert m.state.totals == {"scored": 1, "dead_lettered": 1, "labels": 1}
    assert list(m.state.models) == [(2, "canary")]


async def test_the_consumer_is_restarted_after_an_error() -> None:
    m = monitor()
    calls: list[int] = []

    async def run() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("broker gone")

    await asyncio.wait_for(m._supervised(run), 10)
    assert len(calls) == 2
