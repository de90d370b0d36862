"""Training history from a replay of the topics equals the same history read from the file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from config.kafka import ensure_topics
from config.settings import Topics
from features import compute_offline
from fraudstream.sources.producer import produce
from fraudstream.sources.replay import label_records, transaction_records
from tests.fixtures.topics import run_id
from training.simulated import load_simulated
from training.topics import load_topics

pytestmark = pytest.mark.integration


async def test_topic_replay_gives_the_file_history(kafka_bootstrap: str) -> None:
    # A simulated history (coordinates, card-testing bursts, delayed labels), ending before every label is due.
    transactions, labels = load_simulated("sim:3000?seed=5&cards=300&terminals=600",
                                          end=datetime.now(UTC) - timedelta(days=10))
    assert labels["is_fraud"].any()
    # The wire carries event times to the microsecond (ISO 8601): the file history is compared at that precision.
    transactions["event_time"] = np.round(transactions["event_time"] * 1e6) / 1e6
    labels = labels.assign(event_time=np.round(labels["event_time"] * 1e6) / 1e6,
                           available_at=np.round(labels["available_at"] * 1e6) / 1e6)
    transactions = transactions.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)
    labels = labels[labels["transaction_id"].isin(set(transactions["transaction_id"]))]
    run = run_id("train-topics")
    topics = Topics(transactions=f"{run}-tx", labels=f"{run}-labels")
    await ensure_topics(kafka_bootstrap, {topics.transactions: 3, topics.labels: 2})
    await produce(kafka_bootstrap, transaction_records(transactions, topics.transactions), quiet=True)
    await produce(kafka_bootstrap, label_records(labels, topics.labels), quiet=True)

    replayed, replayed_labels = await asyncio.to_thread(load_topics, f"kafka://{kafka_bootstrap}", topics)

    assert len(replayed) == len(transactions) and len(replayed_labels) == len(labels)
    assert list(replayed["transaction_id"]) == list(transactions["transaction_id"])
    np.testing.assert_allclose(replayed["event_time"], transactions["event_time"], rtol=0, atol=1e-6)
    # The same offline features, labels included: training from the topics is training from the file.
    np.testing.assert_array_equal(compute_offline(replayed, replayed_labels), compute_offline(transactions, labels))
