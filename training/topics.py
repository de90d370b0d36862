"""Training history from a replay of the ``transactions`` and ``fraud-labels`` topics (instead of a file).

``kafka://host:port`` as the trainer's ``--input`` reads both topics from the beginning up to their current
ends, through the same record schemas as the worker (records the worker would dead-letter are skipped and
counted), into the frames ``load_fdh`` returns. Labels keep their ``available_at``, so the datasets stay
point-in-time correct.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from datetime import UTC, datetime

import pandas as pd

from config.kafka import KafkaConnection, partitions_of
from config.settings import Settings, Topics
from schemas import FraudLabel, Transaction, transaction_context
from schemas.codec import decode
from training.errors import DatasetError

MAX_BYTES = 64 * 1024


def is_topic_source(path: object) -> bool:
    return str(path).startswith("kafka:")


def bootstrap_of(uri: str) -> str:
    # The CLI hands the input around as a Path, which folds "kafka://h:p" into "kafka:/h:p".
    bootstrap = uri.split(":", 1)[1].lstrip("/")
    if not bootstrap or "/" in bootstrap:
        msg = f"{uri!r}: write the broker as kafka://host:port"
        raise DatasetError(msg)
    return bootstrap


async def _read_topic(kafka: KafkaConnection, topic: str, limit: int | None) -> list[bytes]:
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    values: list[bytes] = []
    try:
        parts = await partitions_of(kafka, [topic])
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        remaining = {tp for tp in parts if ends[tp] > 0}
        while remaining and (limit is None or len(values) < limit):
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)
            for tp, messages in batches.items():
                values.extend(m.value for m in messages if m.value is not None)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            if not batches and all([await consumer.position(tp) >= ends[tp] for tp in remaining]):
                break
    finally:
        await consumer.stop()
    return values[:limit] if limit is not None else values


def load_topics(uri: str, topics: Topics | None = None, limit: int | None = None, *,
                settings: Settings | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(transactions, labels)`` frames from the two topics, transactions ordered by (event time, id).

    Topic names (unless given) and TLS/SASL come from ``settings`` (by default the environment and
    ``.fraudstream/stack.env``), as for every other Kafka client of fraudstream.
    """
    settings = settings or Settings()
    topics = topics or settings.topics
    bootstrap = bootstrap_of(uri)
    kafka = dataclasses.replace(settings.kafka, bootstrap=bootstrap)  # the URI's broker, the settings' TLS/SASL
    raw_tx = asyncio.run(_read_topic(kafka, topics.transactions, limit))
    raw_labels = asyncio.run(_read_topic(kafka, topics.labels, None))
    # The worker's own rules: what it would dead-letter (far-future times included) is not history.
    context = transaction_context(datetime.now(UTC), 86_400.0)
    parsed = (decode(Transaction, v, max_bytes=MAX_BYTES, context=context) for v in raw_tx)
    txs = [t for t in parsed if isinstance(t, Transaction)]
    labels = [x for x in (decode(FraudLabel, v, max_bytes=MAX_BYTES) for v in raw_labels)
              if isinstance(x, FraudLabel)]
    skipped = len(raw_tx) - len(txs) + len(raw_labels) - len(labels)
    print(f"read {len(txs):,} transactions and {len(labels):,} labels from {bootstrap}"
          f" ({skipped} invalid records skipped)", file=sys.stderr, flush=True)
    if not txs:
        msg = f"no valid transactions on {topics.transactions} at {bootstrap}"
        raise DatasetError(msg)
    transactions = pd.DataFrame({
        "transaction_id": [t.transaction_id for t in txs], "card_ref": [t.card_id for t in txs],
        "terminal_id": [t.terminal_id for t in txs], "event_time": [t.event_time.timestamp() for t in txs],
        "amount": [t.amount for t in txs],
        "latitude": [t.latitude if t.latitude is not None else float("nan") for t in txs],
        "longitude": [t.longitude if t.longitude is not None else float("nan") for t in txs],
    })
    # Partitions interleave on the way back: event time orders the history, the id breaks ties.
    transactions = (transactions.drop_duplicates("transaction_id")
                    .sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True))
    label_frame = pd.DataFrame({
        "transaction_id": [x.transaction_id for x in labels], "card_ref": [x.card_id for x in labels],
        "terminal_id": [x.terminal_id for x in labels], "event_time": [x.event_time.timestamp() for x in labels],
        "available_at": [x.available_at.timestamp() for x in labels], "is_fraud": [x.is_fraud for x in labels],
    }, columns=["transaction_id", "card_ref", "terminal_id", "event_time", "available_at", "is_fraud"])
    return transactions, label_frame.drop_duplicates("transaction_id", keep="last").reset_index(drop=True)

