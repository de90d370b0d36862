"""Small Kafka helpers shared by the demo, benchmarks and tests."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def partitions_of(bootstrap: str, topics: list[str], **client_options: Any) -> list[TopicPartition]:
    """Every partition of ``topics``; ``client_options``: TLS/SASL (``settings.kafka_client_options``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_options)
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


async def ensure_topics(bootstrap: str, topics: dict[str, int]) -> list[str]:
    """Create the topics (name → partitions, replication 1) that do not exist yet; returns those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name, partitions in topics.items() if name not in existing]
        if missing:
            await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()
