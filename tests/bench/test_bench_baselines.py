"""The baselines of ``bench e2e`` on the real broker: the naive agent hands records to the producer without
waiting for each acknowledgement (buffered, as faust's ``topic.send``), the strict one waits for every
record's; both publish every record before they return. And the headline speed-up is against the naive one."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from config.kafka import delete_topics, ensure_topics
from config.settings import load_settings
from fraudstream.bench.baselines import NaivePath, StrictPerRecordPath, baseline_path
from fraudstream.bench.e2e import headline
from streams.messages import OutboundMessage
from streams.publisher import KafkaBatchPublisher

RECORDS = 200


async def _count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(2)]
        ends = await consumer.end_offsets(parts)
        return sum(ends.values())
    finally:
        await consumer.stop()


class CountingPublisher:
    """The worker's publisher, counting the records of each call (a call returns once all are acknowledged)."""

    def __init__(self, publisher: KafkaBatchPublisher) -> None:
        self.publisher = publisher
        self.calls: list[int] = []

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        self.calls.append(len(messages))
        await self.publisher.publish(messages)


@pytest.mark.integration
async def test_the_naive_agent_buffers_its_sends_and_the_strict_one_does_not(kafka_bootstrap: str) -> None:
    """Through ``baseline_path``, as the worker resolves ``FRAUD_PIPELINE_MODE`` (``fraudstream/cli/streaming.py``):
    the mode ``bench e2e``'s naive phase runs must be the buffered agent, not the per-record-acknowledged one
    (which is what ``naive`` meant before #24)."""
    topic = f"baselines-{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, {topic: 2})
    out = [OutboundMessage(topic, f"card-{i % 7}".encode(), b'{"n": %d}' % i) for i in range(RECORDS)]
    settings = load_settings(kafka_bootstrap=kafka_bootstrap)
    publisher = KafkaBatchPublisher(kafka_bootstrap)
    await publisher.start()
    naive = await baseline_path("naive", settings)
    try:
        assert isinstance(naive, NaivePath), f"FRAUD_PIPELINE_MODE=naive runs {type(naive).__name__}"
        await naive.publish(publisher, out)
        assert await _count(kafka_bootstrap, topic) == RECORDS  # every record acknowledged on return
        assert naive.max_unacked > 1, "the naive agent waited for each acknowledgement"

        strict = await baseline_path("strict_per_record", settings)
        assert isinstance(strict, StrictPerRecordPath)
        counting = CountingPublisher(publisher)
        await strict.publish(counting, out)
        assert await _count(kafka_bootstrap, topic) == 2 * RECORDS
        assert counting.calls == [1] * RECORDS, "the strict baseline published more than one record per call"
    finally:
        if isinstance(naive, NaivePath):
            await naive.producer.stop()
        await publisher.close()
        await delete_topics(kafka_bootstrap, [topic])


def test_the_speedup_is_against_the_naive_agent_with_the_strict_figure_beside_it() -> None:
    batched = {"throughput_tps": 8_000.0}
    latency = {"p50_ms": 40.0, "p99_ms": 90.0}
    figures = headline(batched, latency, {"throughput_tps": 2_000.0}, {"throughput_tps": 500.0})

    assert figures["speedup_vs_naive"] == 4.0 and figures["naive_throughput_tps"] == 2_000.0
    assert figures["speedup_vs_strict_per_record"] == 16.0
    assert figures["strict_per_record_throughput_tps"] == 500.0
    assert {"throughput_tps", "p50_ms", "p99_ms"} <= figures.keys()
