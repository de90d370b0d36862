"""Batched publishing: one Kafka record batch per (topic, partition) per micro-batch.

Per-record ``send`` (faust's ``topic.send`` or aiokafka's ``send``) costs a future and a lookup per record;
here a micro-batch of scored records becomes a handful of ``send_batch`` calls. Keys are partitioned with
Kafka's default murmur2 partitioner, as the Java clients do, so a card's records always share a partition
(vectorised over the batch: streams/partitioner.py).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

from config.kafka import KafkaConnection, as_connection
from streams.messages import OutboundMessage
from streams.partitioner import partitions_for


class KafkaBatchPublisher:
    def __init__(self, kafka: KafkaConnection | str) -> None:
        # acks=all + idempotence: a retried batch is neither duplicated nor reordered by the broker.
        self._producer = as_connection(kafka).producer(
            acks="all", enable_idempotence=True, linger_ms=0, max_batch_size=1024 * 1024,
            max_request_size=4 * 1024 * 1024,
        )
        self._partitions: dict[str, list[int]] = {}

    async def start(self) -> None:
        await self._producer.start()

    async def close(self) -> None:
        await self._producer.stop()

    async def _partitions_of(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return self._partitions[topic]

    async def publish(self, messages: Sequence[OutboundMessage]) -> None:
        if not messages:
            return
        by_topic: dict[str, list[OutboundMessage]] = defaultdict(list)
        for message in messages:
            by_topic[message.topic].append(message)
        grouped: dict[tuple[str, int], list[OutboundMessage]] = defaultdict(list)
        for topic, group in by_topic.items():
            partitions = await self._partitions_of(topic)
            chosen = partitions_for([m.key or b"" for m in group], partitions)
            for message, partition in zip(group, chosen, strict=True):
                grouped[(topic, partition if message.key else partitions[0])].append(message)
        pending = []
        for (topic, partition), group in grouped.items():
            batch = self._producer.create_batch()
            for message in group:
                if batch.append(key=message.key, value=message.value, timestamp=None) is None:
                    batch.close()
                    pending.append(await self._producer.send_batch(batch, topic, partition=partition))
                    batch = self._producer.create_batch()
                    batch.append(key=message.key, value=message.value, timestamp=None)
            batch.close()
            pending.append(await self._producer.send_batch(batch, topic, partition=partition))
        # At-least-once: the micro-batch is done only when the broker acknowledged every record batch.
        await asyncio.gather(*pending)
