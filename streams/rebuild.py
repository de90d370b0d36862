"""``fraudstream features rebuild``: restore the online feature state from the topics after Redis lost it.

The topics are the source of truth: ``transactions`` and ``fraud-labels`` are read from their beginning up
to the end offsets seen at start, validated by the same decoder as the worker (rejected records changed no
state there, so they change none here), card ids hashed with the same keyed hash, and applied through the
same online engine (``RedisFeatureStore``). Partitions are merged by Kafka record timestamp, keeping each
partition's offset order, so every card's transactions (one partition: key = card id) are applied in the
order the worker applied them. Labels are applied as the stream would see them: before each batch, every
label whose ``available_at`` is at or before the latest event time so far (as ``features.parity`` does).

Transaction ids follow the worker's rule (``features/ids.py``): each record's id is claimed with its content
fingerprint, a repeat is applied once, and a record whose id belongs to other content (the worker
dead-lettered it as a conflict) is skipped; the claims restore the id records Redis may have lost.

Why the state must be empty first: the engine forgets transaction ids older than its de-duplication horizon,
so replaying old transactions onto surviving state would count them twice. ``rebuild`` therefore refuses to
run over existing keys unless told to replace them (``replace=True``: the prefix is purged first). Run it
with the workers stopped; they resume from their committed offsets afterwards, and what they re-read is
de-duplicated (it is recent, so within the horizon).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import pandas as pd
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from config.kafka import KafkaConnection, as_connection
from config.settings import Settings
from features import FEATURE_LIST, LabelEvent, RedisFeatureStore, TransactionEvent
from features.ids import Claim, TransactionIds
from features.offline import compute_offline
from features.parity import apply_history, compare
from schemas import FraudLabel, Transaction, transaction_context
from schemas.codec import Rejection, decode
from streams.identity import CardHasher, content_hash

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


class RebuildRefused(RuntimeError):
    """The online state is not empty and the caller did not ask to replace it (never retry as is)."""


@dataclass
class RebuildReport:
    transactions: int = 0
    labels: int = 0
    rejected: int = 0
    duplicates: int = 0
    conflicts: int = 0
    purged_keys: int = 0
    seconds: float = 0.0
    verified_rows: int | None = None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "transactions": self.transactions, "labels": self.labels, "rejected": self.rejected,
            "duplicates": self.duplicates, "conflicts": self.conflicts, "purged_keys": self.purged_keys,
            "seconds": round(self.seconds, 3),
            "verified_rows": self.verified_rows, "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "end_offsets": {t: {str(p): o for p, o in parts.items()} for t, parts in self.offsets.items()},
        }


async def read_topic(kafka: KafkaConnection | str, topic: str) -> tuple[
    list[ConsumerRecord[bytes, bytes]], dict[int, int]
]:
    """Every record of ``topic`` up to the end offsets at the start, merged across partitions by record
    timestamp (stable within a partition); plus those end offsets."""
    consumer = as_connection(kafka).consumer(
        enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or await _partitions(consumer, topic))
        parts = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        per_part: dict[int, list[ConsumerRecord[bytes, bytes]]] = {tp.partition: [] for tp in parts}
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batches.items():
                per_part[tp.partition].extend(m for m in messages if m.offset < ends[tp])
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    merged = list(heapq.merge(*per_part.values(), key=lambda m: m.timestamp))
    return merged, {tp.partition: ends[tp] for tp in parts}


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()  # the topic's metadata is fetched on first use
    return consumer.partitions_for_topic(topic) or {0}


def transaction_events(
    records: Iterable[SourceRecord], hasher: CardHasher, settings: Settings, report: RebuildReport
) -> Iterator[tuple[TransactionEvent, Claim]]:
    """Records of ``transactions`` as the worker reads them: the first record of every id, with its claim;
    later records of an id are either repeats (applying them again would change nothing) or conflicts the
    worker dead-lettered, and rejections: counted, skipped."""
    context = transaction_context(datetime.now(UTC), settings.max_clock_skew_s)
    seen: dict[str, str] = {}
    for m in records:
        tx = decode(Transaction, m.value, max_bytes=settings.max_message_bytes, context=context)
        if isinstance(tx, Rejection):
            report.rejected += 1
            continue
        card_ref = hasher.reference(tx.card_id)
        event_time = tx.event_time.timestamp()
        fingerprint = content_hash(card_ref, tx.terminal_id, tx.amount, tx.currency, event_time, tx.latitude,
                                   tx.longitude)
        first = seen.get(tx.transaction_id)
        if first is not None:
            if first == fingerprint:
                report.duplicates += 1
            else:
                report.conflicts += 1
            continue
        seen[tx.transaction_id] = fingerprint
        event = TransactionEvent(
            transaction_id=tx.transaction_id, card_ref=card_ref, terminal_id=tx.terminal_id, event_time=event_time,
            amount=tx.amount, latitude=tx.latitude, longitude=tx.longitude,
        )
        yield event, Claim(tx.transaction_id, fingerprint, m.topic, m.partition, m.offset)


async def _claimed(ids: TransactionIds, candidates: list[tuple[TransactionEvent, Claim]], report: RebuildReport,
                   batch_size: int) -> list[TransactionEvent]:
    """The candidates whose id is theirs (new, or claimed by the same content before); the id records are
    written as the worker writes them."""
    out: list[TransactionEvent] = []
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start:start + batch_size]
        results = await ids.claim([claim for _, claim in chunk])
        for (event, _), result in zip(chunk, results, strict=True):
            if result.status == "conflict":
                report.conflicts += 1
            else:
                out.append(event)
    return out


class SourceRecord(Protocol):
    """Where a record came from (a Kafka ``ConsumerRecord`` is one): its claim names the position."""

    @property
    def value(self) -> bytes | None: ...
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


def label_events(
    values: Iterable[bytes | None], hasher: CardHasher, settings: Settings, report: RebuildReport
) -> list[LabelEvent]:
    """Records of ``fraud-labels`` as the worker reads them, ordered by ``available_at``."""
    out: list[LabelEvent] = []
    for value in values:
        label = decode(FraudLabel, value, max_bytes=settings.max_message_bytes)
        if isinstance(label, Rejection):
            report.rejected += 1
            continue
        out.append(LabelEvent(
            transaction_id=label.transaction_id, card_ref=hasher.reference(label.card_id),
            terminal_id=label.terminal_id, event_time=label.event_time.timestamp(),
            available_at=label.available_at.timestamp(), is_fraud=label.is_fraud,
        ))
    out.sort(key=lambda lb: lb.available_at)
    return out


async def rebuild(
    settings: Settings, *, replace: bool = False, verify: bool = False, batch_size: int = 2000,
    key_prefix: str = "fs", progress: Progress | None = None,
) -> RebuildReport:
    """Replay the topics into the online store; with ``verify``, compare every vector with the offline
    engine on the same ordered history (``max_rel_diff`` in the report)."""
    started = time.perf_counter()
    report = RebuildReport()
    client = settings.redis.client()
    store = RedisFeatureStore(client, key_prefix=key_prefix, dedup_horizon_s=settings.dedup_horizon_s)
    try:
        # The store's own prefix carries the state-layout tag: state of another feature layout is not
        # ours to worry about (the new layout starts empty; this is how it gets its history).
        existing = [k async for k in client.scan_iter(match=f"{store.key_prefix}:*", count=100)]
        if existing and not replace:
            msg = (f"Redis already holds online state under '{store.key_prefix}:*'; replaying onto it would "
                   "count old transactions twice. Stop the workers and rerun with --replace to purge and "
                   "rebuild.")
            raise RebuildRefused(msg)
        if existing:
            report.purged_keys = await store.purge()
        await store.load_scripts()
        hasher = CardHasher(settings.card_hash_key())
        tx_records, tx_ends = await read_topic(settings.kafka, settings.topics.transactions)
        label_records, label_ends = await read_topic(settings.kafka, settings.topics.labels)
        report.offsets = {settings.topics.transactions: tx_ends, settings.topics.labels: label_ends}
        ids = TransactionIds(client, key_prefix=key_prefix, horizon_s=settings.dedup_horizon_s)
        candidates = list(transaction_events(tx_records, hasher, settings, report))
        events = await _claimed(ids, candidates, report, batch_size)
        labels = label_events((m.value for m in label_records), hasher, settings, report)
        vectors = await apply_history(store, events, labels, batch_size=batch_size, keep=verify, progress=progress)
        report.transactions = len(events)
        report.labels = len(labels)
        if verify and vectors is not None:
            offline = compute_offline(_frame(events), _label_frame(labels) if labels else None)
            max_abs, max_rel, _, _ = compare(vectors, offline, FEATURE_LIST.names)
            report.verified_rows, report.max_abs_diff, report.max_rel_diff = len(events), max_abs, max_rel
    finally:
        await store.close()
        await client.aclose()
    report.seconds = time.perf_counter() - started
    return report


def _frame(events: list[TransactionEvent]) -> pd.DataFrame:
    nan = float("nan")
    return pd.DataFrame({
        "transaction_id": [e.transaction_id for e in events], "card_ref": [e.card_ref for e in events],
        "terminal_id": [e.terminal_id for e in events], "event_time": [e.event_time for e in events],
        "amount": [e.amount for e in events],
        "latitude": [nan if e.latitude is None else e.latitude for e in events],
        "longitude": [nan if e.longitude is None else e.longitude for e in events],
    })


def _label_frame(labels: list[LabelEvent]) -> pd.DataFrame:
    return pd.DataFrame({
        "transaction_id": [lb.transaction_id for lb in labels], "card_ref": [lb.card_ref for lb in labels],
        "terminal_id": [lb.terminal_id for lb in labels], "event_time": [lb.event_time for lb in labels],
        "available_at": [lb.available_at for lb in labels], "is_fraud": [lb.is_fraud for lb in labels],
    })
