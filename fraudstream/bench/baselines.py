"""The per-record designs ``fraudstream bench e2e`` measures the worker against (``FRAUD_PIPELINE_MODE``).

Both run in the same worker, on the same micro-batches, with the same validation, records and acks as the
batched pipeline; what differs is how each transaction meets Redis, the model and the broker
(``streams.pipeline.RecordPath``):

* ``naive`` — a conventional faust agent: per transaction one Redis round trip and one model call, and
  each record handed to the producer without waiting for its acknowledgement (faust's ``topic.send``,
  aiokafka's ``send``: the producer batches what is buffered); the acknowledgements are awaited before
  the batch is acked, as faust awaits them before it commits. ``speedup_vs_naive`` is against this one.
* ``strict_per_record`` — the same, but each record's publish waits for the broker's full ``acks=all``
  acknowledgement before the next record is sent: stricter (and slower) than a naive agent; reported
  beside it.

Benchmark code, not a production setting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from aiokafka import AIOKafkaProducer

from config.settings import Settings
from features.events import TransactionEvent
from features.ids import Claim, ClaimResult, TransactionIds
from features.store import OnlineFeatureStore
from schemas import Transaction
from streams.messages import OutboundMessage, Publisher
from streams.pipeline import RecordPath
from streams.retry import retry_forever
from streams.scorer import BatchScorer, ScoreResult

BaselineMode = Literal["naive", "strict_per_record"]


class PerRecordPath:
    """One Redis round trip and one model call per transaction; publishing as the subclass says."""

    async def claim(self, ids: TransactionIds, claims: list[Claim]) -> list[ClaimResult]:
        return [r for c in claims for r in await retry_forever(partial(ids.claim, [c]),
                                                               what="transaction ids in Redis")]

    async def record_outcomes(self, ids: TransactionIds, stored: list[tuple[str, bytes]]) -> None:
        for one in stored:
            await retry_forever(partial(ids.record_outcomes, [one]), what="transaction results in Redis")

    async def submit(self, store: OnlineFeatureStore, events: list[TransactionEvent]) -> Any:
        return None  # nothing ahead of time: each record's round trip happens in ``features``

    async def features(
        self, store: OnlineFeatureStore, events: list[TransactionEvent], pending: Any
    ) -> npt.NDArray[np.float64]:
        rows = [await retry_forever(partial(store.apply_and_read, [event]), what="feature state in Redis")
                for event in events]
        return np.vstack(rows)

    async def score(
        self, scorer: BatchScorer, vectors: npt.NDArray[np.float32], events: list[TransactionEvent],
        txs: list[Transaction],
    ) -> Sequence[ScoreResult]:
        results: list[ScoreResult] = []
        for i, (event, tx) in enumerate(zip(events, txs, strict=True)):
            results.extend(await scorer.score_batch(
                vectors[i : i + 1], ids=[tx.transaction_id], card_refs=[event.card_ref], amounts=[tx.amount],
                currencies=[tx.currency],
            ))
        return results

    async def publish(self, publisher: Publisher, out: list[OutboundMessage]) -> None:
        raise NotImplementedError


class StrictPerRecordPath(PerRecordPath):
    """Each record published on its own and acknowledged (``acks=all``) before the next is sent."""

    async def publish(self, publisher: Publisher, out: list[OutboundMessage]) -> None:
        for message in out:
            await retry_forever(partial(publisher.publish, [message]), what="publish to Kafka")


class NaivePath(PerRecordPath):
    """Each record handed to the producer as it is scored (buffered, like faust's ``topic.send``); the
    batch's acknowledgements awaited together before the batch is acked."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.max_unacked = 0
        """The most records of a batch not yet acknowledged when its last was sent (buffering at work)."""

    async def publish(self, publisher: Publisher, out: list[OutboundMessage]) -> None:
        await retry_forever(partial(self._send_all, out), what="publish to Kafka")

    async def _send_all(self, out: list[OutboundMessage]) -> None:
        futures = [await self.producer.send(m.topic, m.value, key=m.key) for m in out]
        self.max_unacked = max(self.max_unacked, sum(not f.done() for f in futures))
        await asyncio.gather(*futures)


def naive_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer configured as the worker's faust app configures its own (``streams/app.py``)."""
    return settings.kafka.producer(acks="all", linger_ms=1, max_batch_size=512 * 1024)


async def baseline_path(mode: BaselineMode, settings: Settings) -> RecordPath:
    """The path of a baseline mode; its producer (``naive``) is started here and lives as long as the worker."""
    if mode == "strict_per_record":
        return StrictPerRecordPath()
    producer = naive_producer(settings)
    await producer.start()
    return NaivePath(producer)
