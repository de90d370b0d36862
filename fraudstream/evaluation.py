"""``fraudstream evaluate --via stream``: a fold's test week scored through the real path — Kafka, a worker
process, Redis features and the model backend — instead of in-process.

Per fold: the trained model is exported to a private model repository; the history from ``lookback_days()``
before the test week (the feature list's longest reach back — 30-day windows ending 14 days back in
``fraudstream_v2``, so 44 days — plus a margin) to its end is replayed into private topics; the
labels first (the online engine counts a label only from its ``available_at``, so applying them early is
point-in-time correct, while applying one late would not be), then the transactions; the scored records of
the test rows are collected. A test row the worker dead-letters (or that does not come back in time) is
reported with its reason — the dead letter names its transaction id — and the rest are scored. Topics,
consumer group and Redis key prefix are private to the run and removed afterwards.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
from aiokafka import AIOKafkaConsumer

from config.kafka import KafkaConnection, assign_at_end, delete_topics, ensure_topics, partitions_of
from config.settings import Settings, Topics
from features import FEATURE_LIST, FeatureList
from features.plan import compile_plan
from fraudstream.sources.producer import produce
from fraudstream.sources.replay import label_records, transaction_records
from fraudstream.stack.redis import purge_prefix
from fraudstream.workers import spawn_worker, worker_env

DAY_S = 86_400.0
# Days replayed before the longest window's far end, so the first test rows see the history offline sees.
LOOKBACK_MARGIN_DAYS = 3
LABEL_DELAY_S = 7 * DAY_S


def lookback_days(features: FeatureList = FEATURE_LIST) -> int:
    """Days of history a test row's features can reach back (delayed windows included), plus a margin."""
    return math.ceil(compile_plan(features).retention_s / DAY_S) + LOOKBACK_MARGIN_DAYS


def _progress(message: str) -> None:
    print(f"[evaluate via stream] {message}", file=sys.stderr, flush=True)


async def _wait_consumed(kafka: KafkaConnection, group: str, topic: str, timeout_s: float) -> None:
    """Wait until ``group`` has committed the end offset of every partition of ``topic``."""
    consumer = kafka.consumer()
    admin = kafka.admin()
    await consumer.start()
    await admin.start()
    try:
        parts = await partitions_of(kafka, [topic])
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            committed = await admin.list_consumer_group_offsets(group, partitions=parts)
            if all(committed.get(tp) is not None and committed[tp].offset >= ends[tp] for tp in parts):
                return
            await asyncio.sleep(0.5)
        msg = f"the worker did not consume {topic} within {timeout_s:.0f}s"
        raise TimeoutError(msg)
    finally:
        await consumer.stop()
        await admin.close()


async def _collect(topics: Topics, expected: int, timeout_s: float,
                   reader: AIOKafkaConsumer) -> tuple[dict[str, float], dict[str, str]]:
    """(scores by transaction id, dead-letter reason by transaction id) once ``expected`` records came back
    or ``timeout_s`` passed."""
    scores: dict[str, float] = {}
    dead: dict[str, str] = {}
    dead_count = 0
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    while len(scores) + dead_count < expected and time.monotonic() < deadline:
        batches = await reader.getmany(timeout_ms=500, max_records=20_000)
        for tp, messages in batches.items():
            for m in messages:
                record = orjson.loads(m.value or b"{}")
                if tp.topic == topics.dead_letter:
                    dead_count += 1
                    if record.get("transaction_id"):
                        dead[record["transaction_id"]] = str(record.get("reason"))
                else:
                    scores[record["transaction_id"]] = float(record["score"])
        if time.monotonic() - last > 5:
            last = time.monotonic()
            _progress(f"  {len(scores):,} scored, {dead_count} dead-lettered of {expected:,}")
    return scores, dead


async def stream_scores(settings: Settings, model_backend: str, transactions: pd.DataFrame,
                        labels: pd.DataFrame, wanted: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Scores of the ``wanted`` ids through a private worker, and why each wanted id without one has none."""
    run = uuid.uuid4().hex[:8]
    topics = Topics(transactions=f"eval-{run}-tx", labels=f"eval-{run}-labels", scored=f"eval-{run}-scored",
                    dead_letter=f"eval-{run}-dlq")
    group = f"eval-{run}"
    bootstrap = settings.kafka_bootstrap
    kafka = settings.kafka
    # One partition: the worker then sees the history in the file's order, as the offline engine does.
    # (Across partitions a terminal's transactions interleave by arrival, and the late-event rule applies.)
    await ensure_topics(kafka, {name: 1 for name in
                                    (topics.transactions, topics.labels, topics.scored, topics.dead_letter)})
    env = worker_env(
        home=settings.home, bootstrap=bootstrap, redis_url=settings.redis_url, model_backend=model_backend,
        topics=topics, FRAUD_APP_ID=group, FRAUD_FEATURE_KEY_PREFIX=group, FRAUD_METRICS_PORT="0",
        FRAUD_BATCH_MAX_SIZE="1024",
    )
    worker = spawn_worker(env, settings.home / "logs" / f"{group}.log")
    reader = kafka.consumer(enable_auto_commit=False)
    await reader.start()
    try:
        if not worker.wait_ready(180):
            msg = "the evaluation worker did not start:\n" + worker.tail()
            raise RuntimeError(msg)
        await assign_at_end(reader, kafka, [topics.scored, topics.dead_letter])
        _progress(f"{len(labels):,} labels first, then {len(transactions):,} transactions")
        await produce(kafka, label_records(labels, topics.labels), quiet=True)
        await _wait_consumed(kafka, group, topics.labels, timeout_s=300)
        await produce(kafka, transaction_records(transactions, topics.transactions), quiet=True)
        scores, dead = await _collect(topics, len(transactions), 600 + len(transactions) / 200, reader)
    finally:
        await reader.stop()
        worker.stop()
        await delete_topics(kafka, [topics.transactions, topics.labels, topics.scored, topics.dead_letter])
        purge_prefix(settings.redis, group)
    unscored = {t: dead.get(t, "not scored within the time limit") for t in wanted if t not in scores}
    if unscored:
        _progress(f"{len(unscored)} of {len(wanted):,} test transactions not scored: "
                  f"{dict(Counter(unscored.values()))}")
    return scores, unscored


class StreamScores:
    """``ScoreProvider`` for ``training.evaluate``: scores a fold's test rows through Kafka + worker."""

    name = "stream"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._unscored: dict[str, str] = {}

    def unscored(self) -> Mapping[str, str]:
        return self._unscored

    def scores(self, trained: Any, history: Any, fold: Any) -> npt.NDArray[np.float64]:
        from training.export import write_saved_model

        tx: pd.DataFrame = history.transactions
        times = tx["event_time"].to_numpy(dtype=np.float64)
        test_times = times[fold.test_idx]
        test_start = float(np.floor(test_times.min() / DAY_S) * DAY_S)
        end = float(test_times.max())
        window = tx[(times >= test_start - lookback_days() * DAY_S) & (times <= end)]
        fraud = history.y[window.index.to_numpy()] == 1
        available = window["event_time"].to_numpy(dtype=np.float64) + LABEL_DELAY_S
        known = available <= end
        labels = pd.DataFrame({
            "transaction_id": window["transaction_id"].to_numpy()[known],
            "card_ref": window["card_ref"].to_numpy()[known],
            "terminal_id": window["terminal_id"].to_numpy()[known],
            "event_time": window["event_time"].to_numpy()[known],
            "available_at": available[known],
            "is_fraud": fraud[known],
        })
        wanted = [str(t) for t in tx["transaction_id"].to_numpy()[fold.test_idx]]
        with tempfile.TemporaryDirectory(prefix="eval-model-") as repo:
            write_saved_model(trained, Path(repo) / "fraud_dnn" / "1")
            backend = f"local://{Path(repo) / 'fraud_dnn'}"
            scores, self._unscored = asyncio.run(stream_scores(self.settings, backend, window, labels, wanted))
        return np.asarray([scores.get(t, np.nan) for t in wanted], dtype=np.float64)


def stream_score_provider(settings: Settings) -> StreamScores:
    return StreamScores(settings)
