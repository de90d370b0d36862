"""Produce keyed records to Kafka in batches at a target rate, with progress on stderr."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from config.kafka import KafkaConnection, as_connection


@dataclass(frozen=True, slots=True)
class OutboundRecord:
    topic: str
    key: bytes | None
    value: bytes
    counts_as_transaction: bool = True


@dataclass
class ProduceReport:
    sent: int = 0
    transactions: int = 0
    elapsed_s: float = 0.0
    per_topic: dict[str, int] | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, object]:
        return {"transactions": self.transactions, "records": self.sent, "per_topic": self.per_topic,
                "elapsed_s": round(self.elapsed_s, 3), "rate": round(self.rate, 1)}


def kafka_producer(kafka: KafkaConnection | str) -> AIOKafkaProducer:
    # acks=all + idempotence: a retried send never duplicates or reorders a card's transactions.
    return as_connection(kafka).producer(
        acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024, compression_type=None,
        request_timeout_ms=30_000,
    )


def first_transactions(records: Iterator[OutboundRecord], count: int) -> Iterator[OutboundRecord]:
    """The records of ``records`` up to its ``count``-th transaction (labels in between included);
    ``records`` goes on after it, so one stream can be sent in phases."""
    if count <= 0:
        return
    seen = 0
    for record in records:
        yield record
        if record.counts_as_transaction:
            seen += 1
            if seen >= count:
                return


async def _paced(records: Iterable[OutboundRecord], rate: float | None) -> AsyncIterator[OutboundRecord]:
    """``rate`` is transactions per second; labels (and other records that are not transactions) go out
    between them without a wait of their own."""
    start = time.perf_counter()
    transactions = 0
    for record in records:
        if rate and record.counts_as_transaction:
            due = start + transactions / rate
            transactions += 1
            delay = due - time.perf_counter()
            if delay > 0.002:
                await asyncio.sleep(delay)
        yield record


async def produce(
    kafka: KafkaConnection | str, records: Iterable[OutboundRecord], *, rate: float | None = None,
    label: str = "produced", chunk: int = 2000, quiet: bool = False,
    on_sent: Callable[[OutboundRecord], None] | None = None,
) -> ProduceReport:
    """Send every record (keyed, in order per key) and wait until the broker acknowledged all of them.
    ``on_sent`` sees each record as it is handed to the producer (after the pacing), e.g. to time it."""
    producer = kafka_producer(kafka)
    try:
        await producer.start()
    except BaseException:
        await producer.stop()  # a failed start still holds a client: close it before saying why
        raise
    report = ProduceReport(per_topic={})
    assert report.per_topic is not None
    start = time.perf_counter()
    last_progress = start
    pending: list[asyncio.Future[object]] = []
    try:
        async for record in _paced(records, rate):
            pending.append(await producer.send(record.topic, record.value, key=record.key))
            if on_sent is not None:
                on_sent(record)
            report.sent += 1
            report.transactions += record.counts_as_transaction
            report.per_topic[record.topic] = report.per_topic.get(record.topic, 0) + 1
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                pending.clear()
            now = time.perf_counter()
            if not quiet and now - last_progress > 2.0:
                last_progress = now
                print(f"  {label}: {report.sent:,} records ({report.sent / (now - start):,.0f}/s)", file=sys.stderr)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    report.elapsed_s = time.perf_counter() - start
    return report
