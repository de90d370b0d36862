"""Small Kafka helpers shared by the demo, benchmarks and tests."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def partitions_of(bootstrap: str, topics: list[str]) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return [
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    ]


async def assign_at_end(consumer: AIOKafkaConsumer, bootstrap: str, topics: list[str]) -> None:
    """Assign every partition of ``topics`` and position the consumer at their current ends."""
    parts = await partitions_of(bootstrap, topics)
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for tp in parts:  # materialise the positions before anything is produced
        await consumer.position(tp)
